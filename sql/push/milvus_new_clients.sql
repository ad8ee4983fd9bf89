-- target: push.milvus_new_clients
-- unique_key: cliente_documento
-- mode: replace
-- reads: all
-- description: seed 001 — Ploomes contacts created on/after 2024-02-24 (the seed's date, "para minimizar ao máximo a possibilidade de duplicatas"; PLOOMES_SEND_SINCE changes it) whose CNPJ/CPF, digits only, is no Milvus client's (whose cnpj_cpf is compared as digits too: Milvus keeps it as typed). Pessoa jurídica for 14 digits, física for 11. Past cliente/busca's 1000-row cap a client may be missing from raw.milvus_clients: the sink asks cliente/busca?documento= before every create.
SELECT doc AS cliente_documento,
  CASE WHEN length(doc) = 14 THEN named_struct('nome_fantasia', name, 'razao_social', name, 'inscricao_estadual', '') END AS cliente_pessoa_juridica,
  CASE WHEN length(doc) = 11 THEN named_struct('nome', name) END AS cliente_pessoa_fisica,
  name AS razao_social, true AS cliente_ativo, CAST(id AS VARCHAR) AS cliente_id_integracao
FROM (
  SELECT regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') AS doc, "Name" AS name, "Id" AS id,
    row_number() OVER (PARTITION BY regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') ORDER BY "Id") AS rn
  FROM raw.ploomes_contacts
  WHERE to_timestamp("CreateDate") >= TIMESTAMP '${env:PLOOMES_SEND_SINCE:-2024-02-24}T00:00:00-03:00'
) c
WHERE rn = 1 AND length(doc) IN (11, 14)
  AND doc NOT IN (
    SELECT regexp_replace(cnpj_cpf, '[^0-9]', '', 'g') FROM raw.milvus_clients WHERE cnpj_cpf IS NOT NULL
  )
