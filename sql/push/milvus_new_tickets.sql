-- target: push.milvus_new_tickets
-- unique_key: ticket_ref
-- mode: merge
-- reads: all
-- description: seed 001 — Ploomes tasks and interaction records created on/after 2024-02-24 (PLOOMES_SEND_SINCE) carrying the tag INSTALAÇÃO (TagId 1) or ENTREGA (2) anywhere in their Tags, whose contact's CNPJ/CPF (digits) is a Milvus client's, become one Milvus ticket each (cliente_id = the client's token). The description carries the Ploomes reference, which is how a crashed push is reconciled through chamado/listagem. Records whose contact is not a Milvus client yet are left for a later run. ticket_ref is the ledger key (not sent: the sink omits it).
SELECT r.ticket_ref, m.token AS cliente_id, r.assunto AS chamado_assunto,
  concat(r.assunto, ' [ploomes ', r.ticket_ref, ']') AS chamado_descricao,
  'Suporte' AS chamado_mesa, 'Instalação e entrega' AS chamado_setor,
  CASE WHEN r.tag = 1 THEN 'Instalação' ELSE 'Entrega' END AS chamado_categoria_primaria,
  r._ingest_order
FROM (
  SELECT ticket_ref, contact_id, assunto, min(tag) AS tag, max(_ingest_order) AS _ingest_order
  FROM (
    SELECT concat('task:', CAST("Id" AS VARCHAR)) AS ticket_ref, CAST("ContactId" AS VARCHAR) AS contact_id, "Title" AS assunto,
      try_cast(t['TagId'] AS BIGINT) AS tag, "CreateDate" AS created, _ingest_order
    FROM (SELECT *, unnest("Tags") AS t FROM raw.ploomes_tasks)
    UNION ALL
    SELECT concat('interaction:', CAST("Id" AS VARCHAR)), CAST("ContactId" AS VARCHAR), "Content",
      try_cast(t['TagId'] AS BIGINT), "CreateDate", _ingest_order
    FROM (SELECT *, unnest("Tags") AS t FROM raw.ploomes_interaction_records)
  ) tagged
  WHERE tag IN (1, 2) AND to_timestamp(created) >= TIMESTAMP '${env:PLOOMES_SEND_SINCE:-2024-02-24}T00:00:00-03:00'
  GROUP BY ticket_ref, contact_id, assunto
) r
JOIN (SELECT DISTINCT CAST("Id" AS VARCHAR) AS id, regexp_replace(coalesce("CNPJ", "CPF"), '[^0-9]', '', 'g') AS doc FROM raw.ploomes_contacts) c
  ON c.id = r.contact_id
JOIN (
  SELECT regexp_replace(cnpj_cpf, '[^0-9]', '', 'g') AS doc, max(token) AS token FROM raw.milvus_clients
  WHERE cnpj_cpf IS NOT NULL GROUP BY regexp_replace(cnpj_cpf, '[^0-9]', '', 'g')
) m ON m.doc = c.doc
