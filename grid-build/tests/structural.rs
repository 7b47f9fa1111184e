//! Golden tests of the structural check: a fixture crate is locked with one set of payload
//! types, then checked with another. Each case states its verdict here (so blessing a golden
//! file cannot flip it) and pins the full outcome in `tests/golden/structural/<case>.txt`: the
//! lock after a compatible change, the error message after a breaking one.

mod support;

use support::{golden, without_comments, Fixture};

/// The service every case uses; cases that change the signature itself replace it.
const SERVICE: &str = "
#[grid::handler]
pub trait Svc {
    async fn call(&self, req: Req) -> Result<Resp, Fail>;
}
";

const DEFAULTS: [(&str, &str); 3] = [
    (
        "Req",
        "#[derive(Serialize, Deserialize)]\npub struct Req {\n    pub key: String,\n}\n",
    ),
    (
        "Resp",
        "#[derive(Serialize, Deserialize)]\npub struct Resp {\n    pub size: u64,\n}\n",
    ),
    (
        "Fail",
        "#[derive(Serialize, Deserialize)]\npub enum Fail {\n    NotFound,\n}\n",
    ),
];

/// A crate with `defs`, the default `Req`/`Resp`/`Fail` for those `defs` does not define, and
/// [`SERVICE`] unless `defs` declares a trait.
fn source(defs: &str) -> String {
    let mut s = String::from("use serde::{Deserialize, Serialize};\n\n");
    s.push_str(defs);
    for (name, def) in DEFAULTS {
        let defined = ["struct", "enum", "type"].iter().any(|k| {
            defs.contains(&format!("{k} {name} ")) || defs.contains(&format!("{k} {name}<"))
        });
        if !defined {
            s.push_str(def);
        }
    }
    if !defs.contains("#[grid::handler]") {
        s.push_str(SERVICE);
    }
    s
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Compatible,
    /// Breaking, and the message contains this.
    Breaking(&'static str),
}
use Verdict::*;

fn case(name: &str, verdict: Verdict, before: &str, after: &str) {
    let f = Fixture::locked(&format!("structural-{name}"), &source(before));
    let locked = f.lock();
    f.write(&source(after));
    let outcome = match (f.run(false), verdict) {
        (Ok(_), Compatible) => format!("compatible\n\n{}", without_comments(&f.lock())),
        (Err(e), Breaking(needle)) => {
            let msg = f.redact(&e.to_string());
            assert!(
                msg.contains(needle),
                "case {name}: expected {needle:?} in\n{msg}"
            );
            assert_eq!(
                f.lock(),
                locked,
                "case {name}: nothing is written on failure"
            );
            format!("breaking\n\n{msg}")
        }
        (Ok(_), Breaking(_)) => panic!("case {name}: expected a breaking change, it passed"),
        (Err(e), Compatible) => panic!("case {name}: expected a compatible change:\n{e}"),
    };
    golden(&format!("structural/{name}"), &outcome);
}

// ---- compatible changes --------------------------------------------------------------------

#[test]
fn a_new_field_with_a_default_is_compatible() {
    case(
        "new_field_with_default",
        Compatible,
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub key: String,
    #[serde(default)]
    pub ttl_secs: u32,
}
",
    );
}

#[test]
fn a_new_option_field_is_compatible_because_serde_reads_it_missing_as_none() {
    case(
        "new_option_field",
        Compatible,
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub etag: Option<String>,
}
",
    );
}

#[test]
fn removing_a_field_that_had_a_default_is_compatible() {
    case(
        "removed_field_with_default",
        Compatible,
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub key: String,
    #[serde(default)]
    pub hint: String,
}
",
        "",
    );
}

#[test]
fn string_and_std_string_string_are_the_same_wire_type() {
    case(
        "string_to_std_string",
        Compatible,
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub key: std::string::String,
}
",
    );
}

#[test]
fn string_and_pathbuf_are_the_same_wire_type() {
    case(
        "string_to_pathbuf",
        Compatible,
        "",
        "use std::path::PathBuf;
#[derive(Serialize, Deserialize)]
pub struct Req {
    pub key: PathBuf,
}
",
    );
}

#[test]
fn renaming_a_type_with_the_same_shape_is_compatible() {
    case(
        "renamed_type_same_shape",
        Compatible,
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Lookup {
    pub key: String,
}
#[grid::handler]
pub trait Svc {
    async fn call(&self, req: Lookup) -> Result<Resp, Fail>;
}
",
    );
}

#[test]
fn renaming_a_rust_field_but_keeping_its_wire_name_is_compatible() {
    case(
        "renamed_field_keeping_wire_name",
        Compatible,
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    #[serde(rename = \"size\")]
    pub bytes: u64,
}
",
    );
}

#[test]
fn a_defaulted_field_added_deep_in_a_nested_struct_is_compatible() {
    let before = "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub meta: Meta,
}
#[derive(Serialize, Deserialize)]
pub struct Meta {
    pub owner: Owner,
}
#[derive(Serialize, Deserialize)]
pub struct Owner {
    pub name: String,
}
";
    let after = before.replace(
        "    pub name: String,\n",
        "    pub name: String,\n    #[serde(default)]\n    pub uid: u32,\n",
    );
    case("nested_new_field_with_default", Compatible, before, &after);
}

#[test]
fn a_newtype_is_its_inner_value_and_a_tuple_struct_is_a_tuple() {
    case(
        "newtype_and_tuple_struct",
        Compatible,
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub range: (u32, u32),
}
",
        "#[derive(Serialize, Deserialize)]
pub struct Size(pub u64);
#[derive(Serialize, Deserialize)]
pub struct Range(pub u32, pub u32);
#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: Size,
    pub range: Range,
}
",
    );
}

#[test]
fn maps_of_any_kind_and_aliases_and_generics_compare_by_structure() {
    case(
        "maps_aliases_generics",
        Compatible,
        "use std::collections::HashMap;
#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub tags: HashMap<String, Vec<u8>>,
    pub pages: Vec<Page>,
}
#[derive(Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<String>,
}
",
        "use std::collections::BTreeMap;
type Blob = Vec<u8>;
#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: usize,
    pub tags: BTreeMap<std::string::String, Blob>,
    pub pages: Box<[Paged<String>]>,
}
#[derive(Serialize, Deserialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
}
",
    );
}

#[test]
fn a_new_unit_variant_is_compatible_when_old_readers_have_a_catch_all() {
    case(
        "new_variant_caught_by_other",
        Compatible,
        "#[derive(Serialize, Deserialize)]
pub enum Fail {
    NotFound,
    #[serde(other)]
    Unknown,
}
",
        "#[derive(Serialize, Deserialize)]
pub enum Fail {
    NotFound,
    Busy,
    #[serde(other)]
    Unknown,
}
",
    );
}

// ---- breaking changes ----------------------------------------------------------------------

#[test]
fn a_field_changed_from_u64_to_string_is_breaking() {
    case(
        "field_u64_to_string",
        Breaking("changed from `u64` to `str`"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: String,
}
",
    );
}

#[test]
fn widening_an_integer_is_breaking_because_old_readers_reject_large_values() {
    case(
        "field_u32_to_u64",
        Breaking("changed from `u32` to `u64`"),
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u32,
}
",
        "",
    );
}

#[test]
fn removing_a_required_field_is_breaking() {
    case(
        "removed_required_field",
        Breaking("field `key` is gone, but the old build requires it"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub name: Option<String>,
}
",
    );
}

#[test]
fn a_new_field_without_a_default_is_breaking() {
    case(
        "new_required_field",
        Breaking("new field `owner` has no default"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub key: String,
    pub owner: String,
}
",
    );
}

#[test]
fn renaming_a_field_without_an_alias_is_breaking() {
    case(
        "renamed_field_without_alias",
        Breaking("field `key` was renamed to `name`"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub name: String,
}
",
    );
}

#[test]
fn renaming_a_field_with_an_alias_still_breaks_old_readers() {
    case(
        "renamed_field_with_alias",
        Breaking("the old build still requires `key`"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    #[serde(alias = \"key\")]
    pub name: String,
}
",
    );
}

#[test]
fn a_new_error_variant_is_breaking() {
    case(
        "new_error_variant",
        Breaking("an old caller would get a codec error instead of this error"),
        "",
        "#[derive(Serialize, Deserialize)]
pub enum Fail {
    NotFound,
    Busy { retry_ms: u64 },
}
",
    );
}

#[test]
fn a_new_variant_in_a_response_enum_is_breaking() {
    case(
        "new_response_variant",
        Breaking("new variant `Moved`"),
        "#[derive(Serialize, Deserialize)]
pub enum Resp {
    Found(u64),
}
",
        "#[derive(Serialize, Deserialize)]
pub enum Resp {
    Found(u64),
    Moved(String),
}
",
    );
}

#[test]
fn removing_a_variant_is_breaking() {
    case(
        "removed_variant",
        Breaking("variant `Busy` is gone"),
        "#[derive(Serialize, Deserialize)]
pub enum Fail {
    NotFound,
    Busy,
}
",
        "",
    );
}

#[test]
fn a_type_change_deep_in_a_nested_struct_names_its_path() {
    let before = "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub meta: Vec<Meta>,
}
#[derive(Serialize, Deserialize)]
pub struct Meta {
    pub owner: Owner,
}
#[derive(Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
}
";
    let after = before.replace("pub uid: u32", "pub uid: String");
    case(
        "nested_field_type_change",
        Breaking("(at `Resp.meta[].owner.uid`)"),
        before,
        &after,
    );
}

#[test]
fn an_option_becoming_required_and_back_are_both_breaking() {
    case(
        "option_changes",
        Breaking("changed from `option<u64>` to `u64`"),
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: Option<u64>,
    pub hits: u64,
}
",
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub size: u64,
    pub hits: Option<u64>,
}
",
    );
}

#[test]
fn a_map_value_type_change_is_breaking() {
    case(
        "map_value_change",
        Breaking("(at `Resp.tags{}`)"),
        "use std::collections::HashMap;
#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub tags: HashMap<String, u64>,
}
",
        "use std::collections::HashMap;
#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub tags: HashMap<String, String>,
}
",
    );
}

#[test]
fn tuple_changes_are_breaking() {
    case(
        "tuple_changes",
        Breaking("(at `Resp.range.1`)"),
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub range: (u32, u32),
    pub pair: (u8, u8),
}
",
        "#[derive(Serialize, Deserialize)]
pub struct Resp {
    pub range: (u32, u64),
    pub pair: (u8, u8, u8),
}
",
    );
}

#[test]
fn a_new_request_argument_is_breaking() {
    case(
        "new_request_argument",
        Breaking("a tuple of 2 values became a tuple of 3"),
        "#[grid::handler]
pub trait Svc {
    async fn call(&self, key: String, limit: u32) -> Result<Resp, Fail>;
}
",
        "#[grid::handler]
pub trait Svc {
    async fn call(&self, key: String, limit: u32, deep: bool) -> Result<Resp, Fail>;
}
",
    );
}

#[test]
fn a_type_outside_the_sources_is_compared_as_written_and_the_message_says_so() {
    case(
        "opaque_type_changed",
        Breaking("compares such types by name"),
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    pub id: uuid::Uuid,
}
",
        "use ulid::Ulid;
#[derive(Serialize, Deserialize)]
pub struct Req {
    pub id: Ulid,
}
",
    );
}

#[test]
fn a_new_field_breaks_an_old_reader_that_denies_unknown_fields() {
    case(
        "deny_unknown_fields",
        Breaking("the old build rejects unknown fields"),
        "#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Req {
    pub key: String,
}
",
        "#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Req {
    pub key: String,
    #[serde(default)]
    pub ttl: u32,
}
",
    );
}

#[test]
fn changing_an_enum_representation_is_breaking() {
    case(
        "enum_representation",
        Breaking("representation changed from external tagging"),
        "",
        "#[derive(Serialize, Deserialize)]
#[serde(tag = \"kind\")]
pub enum Fail {
    NotFound,
}
",
    );
}

#[test]
fn a_field_that_may_be_left_out_breaks_an_old_reader_that_requires_it() {
    case(
        "skip_serializing_if",
        Breaking("may be left out by the new build"),
        "",
        "#[derive(Serialize, Deserialize)]
pub struct Req {
    #[serde(skip_serializing_if = \"String::is_empty\", default)]
    pub key: String,
}
",
    );
}

#[test]
fn rename_all_renames_fields_on_the_wire() {
    case(
        "rename_all",
        Breaking("field `size` was renamed to `SIZE`"),
        "",
        "#[derive(Serialize, Deserialize)]
#[serde(rename_all = \"SCREAMING_SNAKE_CASE\")]
pub struct Resp {
    pub size: u64,
}
",
    );
}

#[test]
fn renaming_a_variant_is_breaking() {
    case(
        "renamed_variant",
        Breaking("variant `NotFound` was renamed to `Missing`"),
        "",
        "#[derive(Serialize, Deserialize)]
pub enum Fail {
    Missing,
}
",
    );
}

/// Requests cross in both directions too: a new caller may send the new variant to an old
/// server, which cannot decode it.
#[test]
fn a_new_variant_in_a_request_enum_is_breaking() {
    case(
        "new_request_variant",
        Breaking("new variant `ByPrefix`"),
        "#[derive(Serialize, Deserialize)]
pub enum Req {
    ByKey(String),
}
",
        "#[derive(Serialize, Deserialize)]
pub enum Req {
    ByKey(String),
    ByPrefix(String),
}
",
    );
}

/// A type with hand-written serde impls: grid-build cannot see its structure.
const MANUAL_REQ: &str = "/// Serialized by hand (the impls are elsewhere).
pub struct Req {
    pub key: String,
}
";

#[test]
fn a_type_with_a_hand_written_serde_impl_is_compared_by_its_path() {
    case(
        "hand_written_impl_changed",
        Breaking("changed from `crate::Req` to `crate::Lookup` as written"),
        MANUAL_REQ,
        "/// Serialized by hand (the impls are elsewhere).
pub struct Lookup {
    pub key: String,
}
#[grid::handler]
pub trait Svc {
    async fn call(&self, req: Lookup) -> Result<Resp, Fail>;
}
",
    );
}

#[test]
fn a_hand_written_impl_type_stays_the_same_when_a_namesake_appears_elsewhere() {
    case(
        "hand_written_impl_namesake",
        Compatible,
        MANUAL_REQ,
        &format!("{MANUAL_REQ}pub mod other {{\n    pub struct Req;\n}}\n"),
    );
}
