//! Signing in to the review UI over plain HTTP, as a browser does: the sign-in page's own CSRF
//! token, then the form; the session cookie and its CSRF token come back for the next requests.

use super::web::{csrf_of, set_cookie};

/// A signed-in session: its cookie (`enrichd_session=…`) and the CSRF token its forms carry.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    /// `GET base + path` in this session.
    pub async fn get(&self, client: &reqwest::Client, url: &str) -> reqwest::Response {
        client.get(url).header("cookie", &self.cookie).send().await.unwrap()
    }

    /// A form `POST` in this session, with its CSRF token.
    pub async fn post(&self, client: &reqwest::Client, url: &str) -> reqwest::Response {
        client.post(url).header("cookie", &self.cookie).form(&[("csrf", self.csrf.as_str())]).send().await.unwrap()
    }
}

/// Signs `name` in (with `password` when the server has one); panics unless it works.
pub async fn sign_in(client: &reqwest::Client, base: &str, name: &str, password: Option<&str>) -> Session {
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = set_cookie(&r).expect("the sign-in page starts a session");
    let csrf = csrf_of(&r.text().await.unwrap());
    let mut form = vec![("csrf", csrf.as_str()), ("name", name)];
    if let Some(password) = password {
        form.push(("password", password));
    }
    let r = client.post(format!("{base}/login")).header("cookie", &anonymous).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303, "signing {name} in");
    let cookie = set_cookie(&r).expect("signing in sets a fresh session");
    let page = client.get(format!("{base}/runs")).header("cookie", &cookie).send().await.unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    Session { cookie, csrf }
}
