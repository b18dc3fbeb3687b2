//! The Meta CAPI body as the parse-and-discard peer deserializes it: typed structs with owned
//! strings, the way a minimal handler would. Shared by the `capi_discard` server and the
//! `capi_cpu` measurement, so both time the same peer.

use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)] // fields are parsed, which is the point, and then dropped
pub(crate) struct Body {
    pub(crate) data: Vec<Event>,
    #[serde(default)]
    pub(crate) test_event_code: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct Event {
    pub(crate) event_name: String,
    pub(crate) event_time: i64,
    #[serde(default)]
    pub(crate) event_id: Option<String>,
    #[serde(default)]
    pub(crate) action_source: Option<String>,
    #[serde(default)]
    pub(crate) event_source_url: Option<String>,
    pub(crate) user_data: UserData,
    #[serde(default)]
    pub(crate) custom_data: Option<CustomData>,
}

#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct UserData {
    #[serde(default)]
    pub(crate) em: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) ph: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) external_id: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) fbc: Option<String>,
    #[serde(default)]
    pub(crate) fbp: Option<String>,
    #[serde(default)]
    pub(crate) client_ip_address: Option<String>,
    #[serde(default)]
    pub(crate) client_user_agent: Option<String>,
    #[serde(default)]
    pub(crate) st: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) country: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct CustomData {
    #[serde(default)]
    pub(crate) value: Option<f64>,
    #[serde(default)]
    pub(crate) currency: Option<String>,
    #[serde(default)]
    pub(crate) order_id: Option<String>,
}
