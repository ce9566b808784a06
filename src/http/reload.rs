//! `POST /api/esq/reload` (role `esq_admin`): reloads users, catalog and
//! policies as SIGHUP does (see [`crate::bundle::reload`]). 200 with the
//! bundle now in force, or 422 with why nothing changed.

use pingora::protocols::http::ServerSession;

use super::error::ApiError;
use super::handler::{send_json, Failure, Handler};
use crate::bundle::reload::{reload as reload_bundle, Trigger};

pub async fn reload(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let operator = handler.operator(session, "reloads")?;
    let trigger = Trigger::Api {
        user: &operator.name,
    };
    match reload_bundle(&handler.shared.app, trigger).await {
        Ok(reloaded) => {
            let body = serde_json::to_value(&reloaded)
                .map_err(|err| ApiError::Internal(format!("reload response: {err}")))?;
            send_json(session, 200, &body, &[]).await?;
            Ok(())
        }
        Err(error) => Err(ApiError::ReloadRefused(error.to_string()).into()),
    }
}
