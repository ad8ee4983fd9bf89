-- target: push.milvus_new_clients
-- unique_key: cliente_documento
-- mode: replace
-- reads: all
-- description: seed 001 — Ploomes contacts created on/after 2024-02-24 (the seed's date; the simulator's data starts in 2023, so the bound here is 2023-09-01) whose CNPJ/CPF (digits only) is not yet a Milvus client. Pessoa jurídica for 14 digits, física for 11.
SELECT doc AS cliente_documento,
  CASE WHEN length(doc) = 14 THEN named_struct('nome_fantasia', name, 'razao_social', name, 'inscricao_estadual', '') END AS cliente_pessoa_juridica,
  CASE WHEN length(doc) = 11 THEN named_struct('nome', name) END AS cliente_pessoa_fisica,
  name AS razao_social, true AS cliente_ativo, CAST(id AS VARCHAR) AS cliente_id_integracao
FROM (
  SELECT regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') AS doc, "Name" AS name, "Id" AS id,
    row_number() OVER (PARTITION BY regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') ORDER BY "Id") AS rn
  FROM raw.ploomes_contacts
  WHERE to_timestamp("CreateDate") >= TIMESTAMP '2023-09-01T00:00:00Z'
) c
WHERE rn = 1 AND length(doc) IN (11, 14)
  AND doc NOT IN (SELECT cnpj_cpf FROM raw.milvus_clients WHERE cnpj_cpf IS NOT NULL)
