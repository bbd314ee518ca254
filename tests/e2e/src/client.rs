//! A signed-in HTTP client for the API.

use reqwest::StatusCode;
use serde_json::Value;

/// An API client holding one session cookie.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// `name=value` of the session cookie.
    pub cookie: String,
}

impl Client {
    /// Signs in to the server at `base` (`http://127.0.0.1:PORT`).
    pub async fn login(base: &str, username: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let reply = http
            .post(format!("{base}/api/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login request");
        assert_eq!(reply.status(), StatusCode::OK, "sign-in as {username}");
        let cookie = reply.headers()["set-cookie"]
            .to_str()
            .expect("cookie text")
            .split(';')
            .next()
            .expect("cookie pair")
            .to_owned();
        Self {
            base: base.to_owned(),
            http,
            cookie,
        }
    }

    /// `GET path`, answered with 200 and JSON.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Any request; returns the status and the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("request");
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}
