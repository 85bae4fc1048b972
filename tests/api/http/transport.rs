//! The transport under the API (SPEC §6 "open connections stay bounded",
//! §5 "every error is JSON"), driven by raw TCP clients that misbehave.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::{ADMIN_TOKEN, Options, TestApp, spawn_app, spawn_app_with};

async fn app_with(args: &[&str]) -> TestApp {
    spawn_app_with(Options {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr()).await.unwrap()
}

/// Everything the server sends until it closes the connection; panics if
/// it is still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection is still open after {within:?}; received {:?}",
        String::from_utf8_lossy(&received[..received.len().min(300)])
    );
    received
}

/// The status, lower-cased headers and body of one raw response.
fn parse(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[end + 4..].to_vec())
}

/// Reads one complete response with a `content-length`, leaving the
/// connection open.
async fn one_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status, head, body) = parse(&raw);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if body.len() >= length {
                let _ = end;
                return (status, serde_json::from_slice(&body[..length]).unwrap());
            }
        }
    }
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn a_client_that_stops_mid_request_line_is_closed_after_the_header_timeout() {
    let app = app_with(&["--plugin-http-header-timeout", "500ms"]).await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /heal").await.unwrap();
    let started = Instant::now();
    let received = until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );

    // A kept-alive connection waiting for its next request goes the same way.
    let mut idle = connect(&app).await;
    idle.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(
        one_response(&mut idle).await,
        (200, json!({"status": "ok"}))
    );
    assert!(
        until_closed(&mut idle, Duration::from_secs(5))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off_with_a_408_and_nothing_changes() {
    let app = app_with(&["--plugin-http-body-idle-timeout", "500ms"]).await;
    let mut stalled = connect(&app).await;
    let head = format!(
        "PUT /orgs/org-1/plugins/allowlist HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"plugins\": [\"a\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let raw = until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (status, head, body) = parse(&raw);
    assert_eq!(status, 408, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "request body timed out: send it without pauses"})
    );
    assert_eq!(
        app.admin_get("/orgs/org-1/plugins/allowlist").await.1["plugins"],
        json!([])
    );

    // Without a token the body is never waited for: 401, then closed.
    let mut anonymous = connect(&app).await;
    anonymous
        .write_all(
            b"POST /workspaces/ws-1/plugins HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let (status, _, _) = parse(&until_closed(&mut anonymous, Duration::from_secs(5)).await);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn connections_over_the_bound_wait_in_the_backlog_until_one_closes() {
    let app = app_with(&["--plugin-http-max-connections", "2"]).await;
    // Two kept-alive connections, each served once: both slots are taken.
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for held in [&mut first, &mut second] {
        held.write_all(GET_HEALTHZ).await.unwrap();
        assert_eq!(one_response(held).await.0, 200);
    }
    // The third connects (the kernel queues it) but is not served...
    let mut third = connect(&app).await;
    third.write_all(GET_HEALTHZ).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "served over the bound: {early:?}");
    // ...until a slot frees.
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), one_response(&mut third)).await;
    assert_eq!(served.expect("served once a slot freed").0, 200);
}

#[tokio::test]
async fn requests_the_http_layer_cannot_parse_get_json_errors() {
    let app = spawn_app().await;
    let oversize = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: [(&[u8], u16, &str); 4] = [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
        (
            b"GET /plugins/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n",
            400,
            "malformed HTTP request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
            400,
            "malformed HTTP request",
        ),
        (oversize.as_bytes(), 431, "request headers too large"),
    ];
    for (request, expected, message) in cases {
        let mut client = connect(&app).await;
        client.write_all(request).await.unwrap();
        let raw = until_closed(&mut client, Duration::from_secs(5)).await;
        let (status, head, body) = parse(&raw);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]);
        assert_eq!(status, expected, "{shown}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{shown}: {head}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().starts_with(message),
            "{shown}: {body}"
        );
    }
}

#[tokio::test]
async fn random_methods_and_paths_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let paths = [
        "/plugins",
        "/plugins/sources",
        "/workspaces",
        "/workspaces/ws-1",
        "/workspaces/ws-1/tokens",
        "/workspaces/ws-1/plugins",
        "/workspaces/ws-1/plugins/demo/download",
        "/orgs/org-1/plugins/allowlist",
        "/metrics",
        "/healthz",
        "/no/such/route",
    ];
    let random = |i: usize| {
        let method = format!("X{:08X}", rand::random::<u32>());
        let path = if i.is_multiple_of(2) {
            paths[i % paths.len()].to_owned()
        } else {
            format!("/{:x}/{:x}", rand::random::<u64>(), rand::random::<u32>())
        };
        (Method::from_bytes(method.as_bytes()).unwrap(), path)
    };
    let series = || async {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    // Warm-up: one odd method at every route, one unknown path.
    for path in paths
        .iter()
        .map(|p| p.to_string())
        .chain(["/warm/up".into()])
    {
        app.req(random(0).0, &path, None).send().await.unwrap();
    }
    // Reading the metrics is itself counted, after the text is rendered.
    series().await;
    let before = series().await;
    for i in 0..200 {
        let (method, path) = random(i);
        app.req(method, &path, None).send().await.unwrap();
    }
    assert_eq!(series().await, before);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"http_requests_total{method="other",route="putWorkspace|getWorkspace|deleteWorkspace",status="405"}"#,
        r#"http_requests_total{method="other",route="unmatched",status="404"}"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_responses_is_cut_off() {
    // One connection at a time: the next is served only once the server
    // has given up on the one that stopped reading.
    let app = app_with(&[
        "--plugin-http-body-idle-timeout",
        "500ms",
        "--plugin-http-max-connections",
        "1",
    ])
    .await;
    // (Not through the pooling client: its idle connection would hold the
    // only slot.)
    let mut once = connect(&app).await;
    once.write_all(b"GET /docs/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let page = until_closed(&mut once, Duration::from_secs(10)).await;
    assert_eq!(parse(&page).0, 200);
    let page_len = page.len();
    // Pipelined requests for the API docs page (over a MiB each) outgrow
    // every socket buffer on the way.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(app.addr().parse().unwrap()).await.unwrap();
    let pipelined = "GET /docs/ HTTP/1.1\r\nhost: x\r\n\r\n".repeat(16);
    reader.write_all(pipelined.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    reader.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let mut next = connect(&app).await;
    next.write_all(GET_HEALTHZ).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), one_response(&mut next)).await;
    assert_eq!(
        served.expect("the stalled connection's slot was freed").0,
        200
    );
    let received = until_closed(&mut reader, Duration::from_secs(10)).await;
    assert!(
        received.len() < 16 * page_len,
        "all {} bytes arrived although the client stopped reading",
        received.len()
    );
}
