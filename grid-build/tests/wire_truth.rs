//! The lock check's model of msgpack compatibility, checked against rmp-serde itself.
//!
//! Each step defines an old and a new version of a payload type `T` once, as real Rust: the
//! compiler builds them, and `stringify!` hands the same tokens to grid-build as source text.
//! The step's samples are encoded the way grid encodes payloads (`rmp_serde::to_vec_named`) and
//! decoded by the other version, in both directions, as happens during a rolling upgrade. The
//! check must call a step compatible exactly when every sample crosses both ways. (Samples can
//! only show a breaking step; for a compatible one they are evidence, not proof, so each
//! exercises what the step changed.)

mod support;

use serde::de::DeserializeOwned;
use serde::Serialize;
use support::Fixture;

macro_rules! step {
    ($name:ident, old { $($old:tt)* } new { $($new:tt)* }) => {
        #[allow(dead_code, unreachable_pub)]
        mod $name {
            pub mod old {
                use serde::{Deserialize, Serialize};
                $($old)*
            }
            pub mod new {
                use serde::{Deserialize, Serialize};
                $($new)*
            }
            pub const OLD: &str = stringify!($($old)*);
            pub const NEW: &str = stringify!($($new)*);
        }
    };
}

/// True when every sample of each version decodes as the other version.
fn crosses<O, N>(old: &[O], new: &[N]) -> bool
where
    O: Serialize + DeserializeOwned,
    N: Serialize + DeserializeOwned,
{
    let o2n = old.iter().all(|v| {
        let bytes = rmp_serde::to_vec_named(v).expect("encodes");
        rmp_serde::from_slice::<N>(&bytes).is_ok()
    });
    let n2o = new.iter().all(|v| {
        let bytes = rmp_serde::to_vec_named(v).expect("encodes");
        rmp_serde::from_slice::<O>(&bytes).is_ok()
    });
    o2n && n2o
}

/// grid-build's verdict on the step from `old` to `new` (both define `T`).
fn lock_says_compatible(name: &str, old: &str, new: &str) -> bool {
    let source = |defs: &str| {
        format!(
            "use serde::{{Deserialize, Serialize}};\n{defs}\n\
             #[grid::handler] pub trait Svc {{ async fn call(&self, req: T) -> Result<(), ()>; }}\n"
        )
    };
    let f = Fixture::locked(&format!("truth-{name}"), &source(old));
    f.write(&source(new));
    f.run(false).is_ok()
}

macro_rules! check {
    ($name:ident, [$($o:expr),* $(,)?], [$($n:expr),* $(,)?]) => {{
        use $name::{new, old};
        let really = crosses::<old::T, new::T>(&[$($o),*], &[$($n),*]);
        let says = lock_says_compatible(stringify!($name), $name::OLD, $name::NEW);
        assert_eq!(
            says, really,
            "{}: the lock check says compatible = {says}, rmp-serde says {really}",
            stringify!($name)
        );
        really
    }};
}

step!(defaulted_field,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32, #[serde(default)] pub b: String } });
step!(option_field,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32, pub b: Option<String> } });
step!(required_field,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub a: u32, pub b: String } });
step!(u64_to_string,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub size: u64 } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub size: String } });
step!(u32_to_u64,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub size: u32 } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub size: u64 } });
step!(string_to_pathbuf,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub p: String } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub p: std::path::PathBuf } });
step!(newtype_and_tuple_struct,
old { #[derive(Serialize, Deserialize)] pub struct T { pub size: u64, pub r: (u8, u8) } }
new {
    #[derive(Serialize, Deserialize)] pub struct Size(pub u64);
    #[derive(Serialize, Deserialize)] pub struct R(pub u8, pub u8);
    #[derive(Serialize, Deserialize)] pub struct T { pub size: Size, pub r: R }
});
step!(maps,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub m: std::collections::HashMap<String, u8> } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub m: std::collections::BTreeMap<String, u8> } });
step!(new_variant,
    old { #[derive(Serialize, Deserialize)] pub enum T { A, B(u8) } }
    new { #[derive(Serialize, Deserialize)] pub enum T { A, B(u8), C { x: u8 } } });
step!(new_unit_variant_with_catch_all,
    old { #[derive(Serialize, Deserialize)] pub enum T { A, #[serde(other)] Unknown } }
    new { #[derive(Serialize, Deserialize)] pub enum T { A, B, #[serde(other)] Unknown } });
step!(new_data_variant_with_catch_all,
    old { #[derive(Serialize, Deserialize)] pub enum T { A, #[serde(other)] Unknown } }
    new { #[derive(Serialize, Deserialize)] pub enum T { A, B(u8), #[serde(other)] Unknown } });
step!(internally_tagged_catch_all,
    old { #[derive(Serialize, Deserialize)] #[serde(tag = "t")] pub enum T { A { x: u8 }, #[serde(other)] Unknown } }
    new { #[derive(Serialize, Deserialize)] #[serde(tag = "t")] pub enum T { A { x: u8 }, B { y: u8 }, #[serde(other)] Unknown } });
step!(removed_variant,
    old { #[derive(Serialize, Deserialize)] pub enum T { A, B } }
    new { #[derive(Serialize, Deserialize)] pub enum T { A } });
step!(renamed_with_alias,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub key: String } }
    new { #[derive(Serialize, Deserialize)] pub struct T { #[serde(alias = "key")] pub name: String } });
step!(renamed_keeping_wire_name,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub key: String } }
    new { #[derive(Serialize, Deserialize)] pub struct T { #[serde(rename = "key")] pub name: String } });
step!(deny_unknown,
    old { #[derive(Serialize, Deserialize)] #[serde(deny_unknown_fields)] pub struct T { pub a: u8 } }
    new { #[derive(Serialize, Deserialize)] #[serde(deny_unknown_fields)] pub struct T { pub a: u8, #[serde(default)] pub b: u8 } });
step!(skip_serializing_if,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub a: String } }
    new { #[derive(Serialize, Deserialize)] pub struct T { #[serde(default, skip_serializing_if = "String::is_empty")] pub a: String } });
step!(option_to_required,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub a: Option<u64> } }
    new { #[derive(Serialize, Deserialize)] pub struct T { pub a: u64 } });
step!(unit_to_unit_struct,
    old { #[derive(Serialize, Deserialize)] pub struct T { pub m: () } }
    new { #[derive(Serialize, Deserialize)] pub struct Marker; #[derive(Serialize, Deserialize)] pub struct T { pub m: Marker } });
step!(transparent_wrapper,
old { #[derive(Serialize, Deserialize)] pub struct T { pub id: u64 } }
new {
    #[derive(Serialize, Deserialize)] #[serde(transparent)] pub struct Id { pub raw: u64 }
    #[derive(Serialize, Deserialize)] pub struct T { pub id: Id }
});
step!(rename_all,
    old { #[derive(Serialize, Deserialize)] pub enum T { TooMany(u8) } }
    new { #[derive(Serialize, Deserialize)] #[serde(rename_all = "snake_case")] pub enum T { TooMany(u8) } });

#[test]
fn the_lock_check_agrees_with_rmp_serde_on_struct_fields() {
    assert!(check!(
        defaulted_field,
        [old::T { a: 1 }],
        [new::T {
            a: 1,
            b: "x".into()
        }]
    ));
    assert!(check!(
        option_field,
        [old::T { a: 1 }],
        [new::T {
            a: 1,
            b: Some("x".into())
        }]
    ));
    assert!(!check!(
        required_field,
        [old::T { a: 1 }],
        [new::T {
            a: 1,
            b: "x".into()
        }]
    ));
    assert!(check!(
        renamed_keeping_wire_name,
        [old::T { key: "k".into() }],
        [new::T { name: "k".into() }]
    ));
    assert!(!check!(
        renamed_with_alias,
        [old::T { key: "k".into() }],
        [new::T { name: "k".into() }]
    ));
    assert!(!check!(
        deny_unknown,
        [old::T { a: 1 }],
        [new::T { a: 1, b: 2 }]
    ));
    assert!(!check!(
        skip_serializing_if,
        [old::T { a: "x".into() }],
        [new::T { a: String::new() }]
    ));
}

#[test]
fn the_lock_check_agrees_with_rmp_serde_on_value_types() {
    assert!(!check!(
        u64_to_string,
        [old::T { size: 1 }],
        [new::T { size: "1".into() }]
    ));
    assert!(!check!(
        u32_to_u64,
        [old::T { size: 1 }],
        [new::T { size: 1 << 40 }]
    ));
    assert!(!check!(
        option_to_required,
        [old::T { a: None }],
        [new::T { a: 1 }]
    ));
    assert!(check!(
        string_to_pathbuf,
        [old::T { p: "/a".into() }],
        [new::T { p: "/b".into() }]
    ));
    assert!(check!(
        newtype_and_tuple_struct,
        [old::T { size: 7, r: (1, 2) }],
        [new::T {
            size: new::Size(7),
            r: new::R(1, 2)
        }]
    ));
    assert!(check!(
        maps,
        [old::T {
            m: [("a".to_owned(), 1)].into()
        }],
        [new::T {
            m: [("b".to_owned(), 2)].into()
        }]
    ));
    assert!(check!(
        transparent_wrapper,
        [old::T { id: 9 }],
        [new::T {
            id: new::Id { raw: 9 }
        }]
    ));
    let really = check!(
        unit_to_unit_struct,
        [old::T { m: () }],
        [new::T { m: new::Marker }]
    );
    assert!(!really, "`()` is nil and a unit struct an empty array");
}

#[test]
fn the_lock_check_agrees_with_rmp_serde_on_enum_variants() {
    assert!(!check!(
        new_variant,
        [old::T::A, old::T::B(1)],
        [new::T::A, new::T::B(1), new::T::C { x: 2 }]
    ));
    assert!(!check!(
        removed_variant,
        [old::T::A, old::T::B],
        [new::T::A]
    ));
    assert!(check!(
        new_unit_variant_with_catch_all,
        [old::T::A, old::T::Unknown],
        [new::T::A, new::T::B, new::T::Unknown]
    ));
    assert!(!check!(
        new_data_variant_with_catch_all,
        [old::T::A],
        [new::T::A, new::T::B(1)]
    ));
    assert!(check!(
        internally_tagged_catch_all,
        [old::T::A { x: 1 }],
        [new::T::A { x: 1 }, new::T::B { y: 2 }]
    ));
    assert!(!check!(
        rename_all,
        [old::T::TooMany(1)],
        [new::T::TooMany(1)]
    ));
}
