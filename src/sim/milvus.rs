//! Milvus helpdesk clients (seed 001): `Authorization: <token>`; `GET /api/cliente/busca`
//! (optional `documento`, matched by digits; at most 1000 rows, newest first; `{"lista":
//! [...]}`; documents kept as typed, some punctuated); `POST /api/cliente/criar`
//! creating a client from `cliente_documento` — twice if called twice, like the real one.
//! `GET /_sim/truth/milvus`: clients per document.
use super::data;
use super::{Reply, Sim};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Default)]
pub struct State {
    clients: Vec<Value>,
    tickets: Vec<Value>,
    seeded: bool,
}

/// The state, holding `--milvus-clients` pre-existing clients from the first use on.
fn state(sim: &Sim) -> std::sync::MutexGuard<'_, State> {
    let mut st = sim.milvus.lock().unwrap();
    if !st.seeded {
        st.seeded = true;
        let ploomes = super::ploomes::contact_documents(sim);
        for i in 0..sim.cfg.milvus_clients {
            let (name, doc) = match ploomes.get(i as usize / 2).filter(|_| i % 2 == 0) {
                // Kept as typed: every third shared client's document is punctuated here
                // (digits only on the Ploomes side, or the other way round).
                Some((n, d)) if i % 3 == 0 => (n.clone(), punctuated(d)),
                Some((n, d)) => (n.clone(), d.clone()),
                None => {
                    let mut d = format!("{:020}", data::mix(sim.cfg.seed, &[82, i]));
                    d.truncate(if i % 3 == 0 { 11 } else { 14 });
                    (format!("Cliente Milvus {}", i + 1), d)
                }
            };
            let id = st.clients.len() as u64 + 1;
            st.clients.push(client(sim, id, &name, &doc));
        }
    }
    st
}

/// `12.345.678/0001-90` for 14 digits, `123.456.789-01` for 11.
fn punctuated(d: &str) -> String {
    match d.len() {
        14 => format!("{}.{}.{}/{}-{}", &d[..2], &d[2..5], &d[5..8], &d[8..12], &d[12..]),
        11 => format!("{}.{}.{}-{}", &d[..3], &d[3..6], &d[6..9], &d[9..]),
        _ => d.to_string(),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn client(sim: &Sim, id: u64, name: &str, doc: &str) -> Value {
    json!({
        "id": id, "nome_fantasia": name, "razao_social": name, "cnpj_cpf": doc,
        "token": format!("tk{:012x}", data::mix(sim.cfg.seed, &[81, id])),
    })
}

pub fn token(sim: &Sim) -> String {
    format!("mv-{:018x}", data::mix(sim.cfg.seed, &[80]) as u128 * 13)
}

pub fn handle(sim: &Sim, segs: &[&str], q: &HashMap<String, String>, headers: &HeaderMap, body: &[u8]) -> (String, Result<Reply, Reply>) {
    let route = match segs {
        ["api", "cliente", "busca"] => "milvus/cliente/busca",
        ["api", "cliente", "criar"] => "milvus/cliente/criar",
        ["api", "chamado", "criar"] => "milvus/chamado/criar",
        ["api", "chamado", "listagem"] => "milvus/chamado/listagem",
        _ => return ("milvus/unknown".into(), Err(Reply::err(404, "not found"))),
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(token(sim).as_str()) {
        return (route.into(), Err(Reply::err(401, "token inválido")));
    }
    if let Err(r) = sim.limit("milvus", 60, "muitas requisições") {
        return (route.into(), Err(r));
    }
    let mut st = state(sim);
    let res = match segs {
        ["api", "cliente", "busca"] => {
            // Newest first, at most 1000 (so past the cap the oldest clients are not listed);
            // `documento` finds a client by its document's digits, however it was typed.
            let doc = q.get("documento").map(|d| digits(d));
            let lista: Vec<Value> = st
                .clients
                .iter()
                .rev()
                .filter(|c| doc.as_ref().is_none_or(|d| digits(c["cnpj_cpf"].as_str().unwrap_or_default()) == *d))
                .take(1000)
                .cloned()
                .collect();
            let n = lista.len();
            Ok(Reply::ok(json!({"lista": lista}), n))
        }
        ["api", "chamado", "criar"] => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let token = v.get("cliente_id").and_then(Value::as_str).unwrap_or_default();
            if !st.clients.iter().any(|c| c["token"].as_str() == Some(token)) {
                Err(Reply::err(422, "cliente_id deve ser o token de um cliente"))
            } else if v.get("chamado_assunto").and_then(Value::as_str).unwrap_or_default().is_empty() {
                Err(Reply::err(422, "chamado_assunto é obrigatório"))
            } else {
                // No idempotency key: calling it twice creates two tickets, like the real one.
                let id = st.tickets.len() as u64 + 1;
                st.tickets.push(json!({
                    "id": id, "codigo": format!("{:06}", id), "cliente_id": token,
                    "assunto": v["chamado_assunto"], "descricao": v.get("chamado_descricao").cloned().unwrap_or(Value::Null),
                    "status": "Aberto",
                }));
                Ok(Reply::ok(json!({"id": id}), 0))
            }
        }
        ["api", "chamado", "listagem"] => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let filtro = v.get("filtro_body").cloned().unwrap_or(Value::Null);
            let num = |k: &str, d: u64| q.get(k).and_then(|x| x.parse::<u64>().ok()).unwrap_or(d).max(1);
            let (page, per) = (num("pagina", 1), num("total_registros", 50).min(100));
            let matching: Vec<&Value> = st
                .tickets
                .iter()
                .filter(|t| filtro.get("cliente_id").and_then(Value::as_str).is_none_or(|c| t["cliente_id"].as_str() == Some(c)))
                .collect();
            let last = (matching.len() as u64).div_ceil(per).max(1);
            let lista: Vec<Value> = matching.into_iter().skip(((page - 1) * per) as usize).take(per as usize).cloned().collect();
            let n = lista.len();
            Ok(Reply::ok(
                json!({"meta": {"paginate": {"current_page": page.to_string(), "last_page": last, "per_page": per}}, "lista": lista}),
                n,
            ))
        }
        _ => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            match v.get("cliente_documento").and_then(Value::as_str).filter(|d| d.chars().all(|c| c.is_ascii_digit()) && (d.len() == 11 || d.len() == 14)) {
                None => Err(Reply::err(422, "cliente_documento deve ter 11 ou 14 dígitos")),
                Some(doc) => {
                    let id = st.clients.len() as u64 + 1;
                    let name = v.get("razao_social").and_then(Value::as_str).unwrap_or_default().to_string();
                    let c = client(sim, id, &name, doc);
                    st.clients.push(c);
                    Ok(Reply::ok(json!({"id": id}), 0))
                }
            }
        }
    };
    (route.into(), res)
}

pub fn truth(sim: &Sim) -> Value {
    let st = state(sim);
    let mut by: HashMap<String, u64> = HashMap::new();
    for c in &st.clients {
        // By digits: the same document typed two ways is one client twice.
        *by.entry(digits(c["cnpj_cpf"].as_str().unwrap_or_default())).or_default() += 1;
    }
    let mut tickets: HashMap<String, u64> = HashMap::new();
    for t in &st.tickets {
        *tickets.entry(t["descricao"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    json!({"clients": st.clients.len(), "by_document": by, "tickets": st.tickets.len(), "tickets_by_description": tickets})
}
