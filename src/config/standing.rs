//! Checks on a user's standing ticket request (`[users.<name>.standing_ticket]`)
//! that need no catalog: the bundle checks its dataset and fields when it
//! loads ([`crate::tickets::TicketIssuer::check`]), so a mistake stops
//! start-up or a reload instead of surfacing at some user's login.

use super::UserConfig;

/// `(key, message)`, as the loader reports it.
type Invalid = (String, String);

pub(super) fn validate(name: &str, user: &UserConfig) -> Result<(), Invalid> {
    let Some(request) = &user.standing_ticket else {
        return Ok(());
    };
    let key = |field: &str| format!("users.{name}.standing_ticket.{field}");
    if request.exception.is_some() {
        return Err((
            key("exception"),
            "a standing request is decided by the policies at each login; an exception waiver is used per ticket (POST /api/esq/ticket with \"exception\")".into(),
        ));
    }
    if request.dataset.trim().is_empty() {
        return Err((key("dataset"), "name the dataset".into()));
    }
    if request.purpose.trim().is_empty() {
        return Err((
            key("purpose"),
            "state why the user needs the data (it is recorded and policies decide on it)".into(),
        ));
    }
    if request.fields.is_empty() {
        return Err((key("fields"), "name at least one field".into()));
    }
    Ok(())
}
