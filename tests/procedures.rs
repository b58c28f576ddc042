//! ListProcedures: what a caller may call, with signatures, one entry per
//! overload, after --allow, the closed system schemas and its roles; pages
//! that fit together; one catalog query per page; the CLI's listing.

mod common;

use common::*;
use procgate::proto as pb;
use tonic::Code;

async fn page(
    client: &mut Client,
    request: pb::ListProceduresRequest,
    token: Option<&str>,
) -> Result<pb::ListProceduresResponse, tonic::Status> {
    let request = match token {
        Some(token) => as_user(request, token),
        None => tonic::Request::new(request),
    };
    client
        .list_procedures(request)
        .await
        .map(tonic::Response::into_inner)
}

/// An entry's name: its overload id when it has one.
fn entry_name(p: pb::ProcedureDescription) -> String {
    if p.overload.is_empty() {
        p.procedure
    } else {
        p.overload
    }
}

/// Every page, `page_size` at a time: the names, and how many pages.
async fn all_names(
    client: &mut Client,
    request: pb::ListProceduresRequest,
    token: Option<&str>,
) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let answer = page(
            client,
            pb::ListProceduresRequest {
                page_token,
                ..request.clone()
            },
            token,
        )
        .await
        .unwrap();
        pages += 1;
        names.extend(answer.procedures.into_iter().map(entry_name));
        if answer.next_page_token.is_empty() {
            return (names, pages);
        }
        page_token = answer.next_page_token;
        assert!(pages < 1000, "the pages never end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_what_may_be_called_page_by_page_with_signatures() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    gw.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await;

    let all = page(&mut client, pb::ListProceduresRequest::default(), None)
        .await
        .unwrap();
    let sumar = all
        .procedures
        .iter()
        .find(|p| p.procedure == "pkg_etl.sumar")
        .expect("pkg_etl.sumar is listed");
    let params: Vec<(&str, i32)> = sumar
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.direction))
        .collect();
    assert_eq!(
        params,
        [
            ("a", pb::Direction::In as i32),
            ("b", pb::Direction::In as i32),
            ("total", pb::Direction::Out as i32),
            ("descripcion", pb::Direction::Out as i32),
        ]
    );
    let twice: Vec<_> = all
        .procedures
        .iter()
        .filter(|p| p.procedure == "public.twice")
        .collect();
    assert_eq!(twice.len(), 2, "one entry per overload");
    assert_eq!(
        twice
            .iter()
            .map(|p| p.overload.as_str())
            .collect::<Vec<_>>(),
        ["public.twice(integer)", "public.twice(text)"]
    );
    assert!(
        twice
            .iter()
            .all(|p| p.overloads == ["public.twice(integer)", "public.twice(text)"])
    );
    for p in &all.procedures {
        assert!(
            !p.procedure.starts_with("pg_catalog.")
                && !p.procedure.starts_with("information_schema."),
            "a system routine is listed: {}",
            p.procedure
        );
        assert!(
            !p.procedure.contains("pg_stat_statements"),
            "an extension's routine is listed: {}",
            p.procedure
        );
    }

    // Pages of 3 fit together into the whole list, in order, each name once.
    let whole: Vec<String> = all.procedures.iter().cloned().map(entry_name).collect();
    let (paged, pages) = all_names(
        &mut client,
        pb::ListProceduresRequest {
            page_size: 3,
            ..Default::default()
        },
        None,
    )
    .await;
    assert_eq!(paged, whole);
    assert_eq!(pages, whole.len().div_ceil(3));

    // One catalog query per page.
    let listed = || async {
        let rows = gw
            .sql(
                "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
                 WHERE query LIKE '%has_function_privilege%' AND query NOT LIKE '%pg_stat_statements%'",
            )
            .await;
        rows[0].get::<_, i64>(0)
    };
    let before = listed().await;
    page(
        &mut client,
        pb::ListProceduresRequest {
            page_size: 5,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(listed().await - before, 1, "one catalog read for a page");

    // Filters: a schema, a glob on the name or the qualified name.
    let (etl, _) = all_names(
        &mut client,
        pb::ListProceduresRequest {
            schema: "PKG_ETL".into(),
            ..Default::default()
        },
        None,
    )
    .await;
    assert!(etl.iter().all(|n| n.starts_with("pkg_etl.")), "{etl:?}");
    assert!(etl.contains(&"pkg_etl.sumar".to_string()));
    for glob in ["sum*", "pkg_etl.sum*", "PKG_ETL.SUMAR"] {
        let (found, _) = all_names(
            &mut client,
            pb::ListProceduresRequest {
                name_like: glob.into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!(found, ["pkg_etl.sumar"], "{glob}");
    }

    // Bad requests say what is wrong.
    for (request, says) in [
        (
            pb::ListProceduresRequest {
                name_like: "[oops".into(),
                ..Default::default()
            },
            "name_like \"[oops\" is not a valid glob",
        ),
        (
            pb::ListProceduresRequest {
                page_token: "made-up".into(),
                ..Default::default()
            },
            "page_token \"made-up\" is not one this server issued",
        ),
        (
            pb::ListProceduresRequest {
                schema: "a;drop".into(),
                ..Default::default()
            },
            "invalid schema",
        ),
    ] {
        let status = page(&mut client, request, None).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_and_the_policy_narrow_the_list() {
    let (dir, tokens) = token_file(
        "etl-user:etl-secret-1:etl\nops-user:ops-secret-1:ops\nnobody:nobody-secret-1\n",
    );
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[roles.etl]\nallow = [\"pkg_etl.*\", \"public.twice\"]\ndeny = [\"pkg_etl.validar_lote\"]\n\
         [roles.ops]\nadmin = true\n",
    )
    .unwrap();
    let gw = Gateway::start(&[
        "--allow",
        "pkg_etl.*,public.twice,public.nap",
        "--token-file",
        &tokens,
        "--policy",
        policy.to_str().unwrap(),
    ])
    .await;
    let mut client = gw.client().await;
    let request = pb::ListProceduresRequest {
        page_size: 2,
        ..Default::default()
    };
    let (etl, _) = all_names(&mut client, request.clone(), Some("etl-secret-1")).await;
    assert_eq!(
        etl,
        [
            "pkg_etl.proceso_largo",
            "pkg_etl.reporte_ventas",
            "pkg_etl.sumar",
            "pkg_etl.ventas_por_region",
            "public.twice(integer)",
            "public.twice(text)",
        ],
        "--allow bounds it (no public.nap), the policy narrows it (no validar_lote)"
    );
    for token in ["ops-secret-1", "nobody-secret-1"] {
        let (none, _) = all_names(&mut client, request.clone(), Some(token)).await;
        assert!(none.is_empty(), "{token}: {none:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_signatures() {
    let gw = Gateway::start(&[]).await;
    let server = format!("http://{}", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["procedures", "--like", "pkg_etl.*"])
            .env("PROCGATE_SERVER", server)
            .env_remove("PROCGATE_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l
                == "pkg_etl.sumar(a numeric, b numeric, OUT total numeric, OUT descripcion text)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "pkg_etl.reporte_ventas(p_desde date = …) → refcursor"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with("pkg_etl.")), "{text}");
}
