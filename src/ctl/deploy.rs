//! `cutover ctl deploy`: starts the deploy in the proxy (`POST`), then
//! follows its steps (`GET`, one JSON object a line) and prints each as it
//! comes, with its elapsed time; `--json` prints the lines as they are.
//! The deploy runs in the proxy: this client going away stops nothing.

use std::fmt::Write as _;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    build_request, encode, exchange, Call, CtlArgs, DeployArgs, Endpoint, Target, CALL_TIMEOUT,
    TOKEN_ENV,
};
use crate::wire::{DeployOutcome, DeployRequest, DeployStep};

/// Where output goes: `(to_stderr, text)`.
type Out<'a> = &'a mut dyn FnMut(bool, &str);

/// Starts (unless `--follow`) and follows a deploy; the exit code: 0 when
/// it released, 1 otherwise.
pub(super) async fn follow_deploy(args: &CtlArgs, deploy: &DeployArgs, out: Out<'_>) -> u8 {
    match run(args, deploy, out).await {
        Ok(code) => code,
        Err(e) => {
            out(true, &format!("cutover ctl: {e:#}\n"));
            1
        }
    }
}

async fn run(args: &CtlArgs, deploy: &DeployArgs, out: Out<'_>) -> anyhow::Result<u8> {
    let target = Target::resolve(args, std::env::var(TOKEN_ENV).ok())?;
    let path = format!("/api/v1/services/{}/deploy", encode(&deploy.service));
    if let Some(image) = &deploy.image {
        let body = DeployRequest {
            image: image.clone(),
            version: deploy.version.clone(),
            canary: deploy.canary,
            keep_old: Some(humantime::format_duration(deploy.keep_old).to_string()),
            timeout: Some(humantime::format_duration(deploy.timeout).to_string()),
            no_retry: deploy.no_retry,
        };
        let call = Call {
            method: Method::POST,
            path: path.clone(),
            body: Some(serde_json::to_value(&body).expect("request bodies serialize: plain data")),
            timeout: CALL_TIMEOUT,
        };
        let answer = exchange(&target, &call).await?;
        if !answer.status.is_success() {
            let refused = super::render::render(&args.command, args.json, &answer);
            out(false, &refused.stdout);
            out(true, &refused.stderr);
            return Ok(1);
        }
    }
    let call = Call {
        method: Method::GET,
        path,
        body: None,
        timeout: CALL_TIMEOUT,
    };
    let mut last: Option<DeployOutcome> = None;
    let mut printer = |line: &str| -> anyhow::Result<()> {
        let step: DeployStep = serde_json::from_str(line)
            .with_context(|| format!("the admin API sent a step that cannot be read: {line}"))?;
        if args.json {
            out(false, &format!("{line}\n"));
        } else {
            out(false, &text(&step));
        }
        if step.outcome.is_some() {
            last = step.outcome;
        }
        Ok(())
    };
    let status = stream(&target, &call, &mut printer).await?;
    if let Some((status, body)) = status {
        let answer = super::Answer {
            status,
            body: super::parse_body(&body),
        };
        let refused = super::render::render(&args.command, args.json, &answer);
        out(true, &refused.stderr);
        return Ok(1);
    }
    Ok(match last {
        Some(DeployOutcome::Released) => 0,
        Some(_) => 1,
        None => {
            out(
                true,
                &format!(
                    "cutover ctl: the steps stopped before the deploy ended; it goes on in the proxy: \
                     follow it with cutover ctl deploy {} --follow\n",
                    deploy.service
                ),
            );
            1
        }
    })
}

/// One step as text: elapsed seconds, step, message.
pub(super) fn text(step: &DeployStep) -> String {
    let mut s = String::new();
    let secs = step.elapsed_ms as f64 / 1000.0;
    let _ = write!(s, "{secs:>7.1}s  {:<12} {}", step.step, step.message);
    s.push('\n');
    s
}

/// Sends `call` and hands each line of a successful answer to `line` as
/// it arrives; a refusal's status and body.
async fn stream(
    target: &Target,
    call: &Call,
    line: &mut dyn FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Option<(StatusCode, Bytes)>> {
    let request = build_request(target, call)?;
    match &target.endpoint {
        Endpoint::Socket(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| super::unreachable(target, &e))?;
            read_lines(stream, request, line).await
        }
        Endpoint::Tcp(url) => {
            let stream = tokio::net::TcpStream::connect(url.connect.as_str())
                .await
                .map_err(|e| super::unreachable(target, &e))?;
            read_lines(stream, request, line).await
        }
    }
}

async fn read_lines<S>(
    stream: S,
    request: http::Request<Full<Bytes>>,
    line: &mut dyn FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Option<(StatusCode, Bytes)>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let result = async {
        let response = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(request))
            .await
            .context("no answer to the deploy's steps")??;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Ok(Some((status, bytes)));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = pending.drain(..=at).collect();
                let text = String::from_utf8_lossy(&text);
                let text = text.trim();
                if !text.is_empty() {
                    line(text)?;
                }
            }
        }
        anyhow::Ok(None)
    }
    .await;
    conn.abort();
    result
}
