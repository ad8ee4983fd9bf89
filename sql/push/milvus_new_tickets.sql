-- target: push.milvus_new_tickets
-- unique_key: ticket_ref
-- mode: merge
-- reads: all
-- description: seed 001 — Ploomes tasks and interaction records tagged INSTALAÇÃO (TagId 1) or ENTREGA (2) whose contact's CNPJ/CPF is a Milvus client become one Milvus ticket each (cliente_id = the client's token). The description carries the Ploomes reference, which is how a crashed push is reconciled through chamado/listagem. Records whose contact is not a Milvus client yet are left for a later run.
SELECT r.ticket_ref, m.token AS cliente_id, r.assunto AS chamado_assunto,
  concat(r.assunto, ' [ploomes ', r.ticket_ref, ']') AS chamado_descricao,
  'Suporte' AS chamado_mesa, 'Instalação e entrega' AS chamado_setor, r._ingest_order
FROM (
  SELECT concat('task:', CAST("Id" AS VARCHAR)) AS ticket_ref, CAST("ContactId" AS VARCHAR) AS contact_id, "Title" AS assunto,
    try_cast("Tags"[1]['TagId'] AS BIGINT) AS tag, _ingest_order
  FROM raw.ploomes_tasks
  UNION ALL
  SELECT concat('interaction:', CAST("Id" AS VARCHAR)), CAST("ContactId" AS VARCHAR), "Content",
    try_cast("Tags"[1]['TagId'] AS BIGINT), _ingest_order
  FROM raw.ploomes_interaction_records
) r
JOIN (SELECT DISTINCT CAST("Id" AS VARCHAR) AS id, regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') AS doc FROM raw.ploomes_contacts) c
  ON c.id = r.contact_id
JOIN (SELECT cnpj_cpf, max(token) AS token FROM raw.milvus_clients GROUP BY cnpj_cpf) m ON m.cnpj_cpf = c.doc
WHERE r.tag IN (1, 2)
