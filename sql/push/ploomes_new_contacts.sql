-- target: push.ploomes_new_contacts
-- unique_key: document
-- mode: replace
-- reads: all
-- description: seed 001 — Milvus clients whose CNPJ/CPF (digits only) is no Ploomes contact's become Ploomes contacts: a company (TypeId 1, CNPJ) for 14 digits, a person (TypeId 2, CPF) for 11. `document` is the key (not sent); `_lookup_filter` is the OData filter that finds the contact after a crash.
SELECT doc AS document, coalesce(name, doc) AS "Name",
  CASE WHEN length(doc) = 14 THEN 1 ELSE 2 END AS "TypeId",
  CASE WHEN length(doc) = 14 THEN doc END AS "CNPJ",
  CASE WHEN length(doc) = 11 THEN doc END AS "CPF",
  concat(CASE WHEN length(doc) = 14 THEN 'CNPJ' ELSE 'CPF' END, ' eq ''', doc, '''') AS _lookup_filter
FROM (
  SELECT regexp_replace(cnpj_cpf, '[^0-9]', '', 'g') AS doc, max(coalesce(razao_social, nome_fantasia)) AS name
  FROM raw.milvus_clients
  WHERE cnpj_cpf IS NOT NULL
  GROUP BY regexp_replace(cnpj_cpf, '[^0-9]', '', 'g')
) m
WHERE length(doc) IN (11, 14)
  AND doc NOT IN (
    SELECT regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') FROM raw.ploomes_contacts
    WHERE coalesce("CNPJ", "CPF") IS NOT NULL
  )
