//! ListProcedures: pages of the catalog, narrowed to what the caller may call.
//!
//! The backend reads the catalog in its own stable order, one query per
//! read. This keeps the entries that `--allow`, the closed system schemas
//! and the caller's roles let through, and that match the request's glob.
//! A page is filled from a few reads at most, so that a caller who may call
//! little still gets its pages quickly (then a page may hold fewer entries
//! than asked, with a next_page_token). The token carries the backend's
//! position, opaque to clients.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use glob::Pattern;

use super::convert::description_to_proto;
use crate::allow::{AllowList, GLOB_MATCH};
use crate::auth::Caller;
use crate::backend::{Backend, CatalogQuery};
use crate::error::{Error, Result};
use crate::name::{Identifier, printable};
use crate::proto as pb;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 500;
/// Catalog reads one page may take when most entries are filtered out.
const MAX_READS_PER_PAGE: usize = 8;
const PAGE_TOKEN_PREFIX: &str = "p1.";

pub async fn list(
    backend: &dyn Backend,
    allow: &AllowList,
    caller: &Caller,
    request: pb::ListProceduresRequest,
) -> Result<pb::ListProceduresResponse> {
    let page_size = match request.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let schema = match request.schema.as_str() {
        "" => None,
        text => Some(Identifier::parse(text, "schema").map_err(Error::from)?),
    };
    let name_like = match request.name_like.as_str() {
        "" => None,
        glob => Some(Pattern::new(glob).map_err(|e| {
            Error::InvalidArgument(format!(
                "name_like {} is not a valid glob: {e}",
                printable(glob)
            ))
        })?),
    };
    let mut query = CatalogQuery {
        schema,
        after: parse_page_token(&request.page_token)?,
        limit: page_size,
    };
    let mut procedures = Vec::new();
    let mut next_page_token = String::new();
    for read in 1..=MAX_READS_PER_PAGE {
        let page = backend.list_procedures(&query).await?;
        let mut examined = 0;
        for entry in &page.entries {
            if procedures.len() == page_size {
                break;
            }
            examined += 1;
            let callable = allow.check(caller, &entry.name).is_ok();
            let wanted = name_like.as_ref().is_none_or(|glob| {
                let object = entry.name.object().folded_lower();
                glob.matches_with(&object, GLOB_MATCH)
                    || glob.matches_with(&entry.name.normalised(), GLOB_MATCH)
            });
            if callable && wanted {
                procedures.push(description_to_proto(&entry.description));
            }
        }
        let exhausted = examined == page.entries.len() && !page.more;
        let Some(last) = page.entries[..examined].last().filter(|_| !exhausted) else {
            break;
        };
        if procedures.len() == page_size || read == MAX_READS_PER_PAGE {
            next_page_token = format!(
                "{PAGE_TOKEN_PREFIX}{}",
                URL_SAFE_NO_PAD.encode(&last.position)
            );
            break;
        }
        query.after = Some(last.position.clone());
    }
    Ok(pb::ListProceduresResponse {
        procedures,
        next_page_token,
    })
}

fn parse_page_token(token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "page_token {} is not one this server issued; pass next_page_token unchanged",
                printable(token)
            ))
        })
}
