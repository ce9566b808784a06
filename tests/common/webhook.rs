//! A local HTTP receiver standing in for the breach webhook: records every
//! POSTed JSON body, and answers 503 to the first `fail_first` requests (to
//! exercise esq's retries), 200 afterwards.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    /// Every request body, in arrival order, with whether it was accepted.
    pub requests: Arc<Mutex<Vec<(serde_json::Value, bool, std::time::Instant)>>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/alerts", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    // One request per connection is enough for the test;
                    // keep-alive requests are read in a loop.
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let header = line.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let value =
                            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        let accepted = {
                            let mut seen = seen.lock().unwrap();
                            let accepted = seen.len() >= fail_first;
                            seen.push((value, accepted, std::time::Instant::now()));
                            accepted
                        };
                        let answer: &[u8] = if accepted {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        };
                        if reader.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, requests }
    }

    /// Bodies that were accepted (delivered alerts).
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, accepted, _)| *accepted)
            .map(|(body, _, _)| body.clone())
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}
