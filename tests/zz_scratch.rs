mod support;
use support::*;
use http::Method;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch() {
    let t = std::time::Instant::now();
    let h = pattern_sha256(20 << 20);
    eprintln!("hash {:?} {h}", t.elapsed());
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Cutover::start(&blue_green(&blue, &green)).await;
    for (addr, l) in [(blue.addr, "direct"), (proxy.addr, "proxy")] {
        let t = std::time::Instant::now();
        let r = Client::http1(addr).await.request(request(Method::POST, "/upload", PatternBody::sized(20<<20))).await;
        eprintln!("upload {l} {:?} {}", t.elapsed(), r.status);
        let t = std::time::Instant::now();
        let resp = Client::http1(addr).await.send(get("/big?n=20971520")).await;
        let (_, n) = hash_body(resp.into_body()).await;
        eprintln!("download {l} {:?} {n}", t.elapsed());
        let t = std::time::Instant::now();
        let resp = Client::http1(addr).await.send(get("/big?n=20971520")).await;
        let n = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes().len();
        eprintln!("download-nohash {l} {:?} {n}", t.elapsed());
    }
}
