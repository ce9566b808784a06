//! The parameter types a client may declare in `Parse`. A declared type
//! decides how PostgreSQL reads the parameter's text, and some input
//! functions look things up: `regrole` turns an id into a role name,
//! `aclitem` names the grantor (the bootstrap superuser by default) and
//! errors on a role that does not exist, other `reg*` types name objects.
//! The guard sees only the SQL text, so the door admits plain types only
//! (numbers, text, dates and times, booleans, uuid, json, bytea, arrays of
//! them) and `0` (let PostgreSQL infer the type from the SQL, which the
//! guard has read).

/// Built-in type OIDs whose input functions read only the value.
const PLAIN: &[u32] = &[
    0,    // unspecified: inferred from the SQL
    16,   // bool
    17,   // bytea
    18,   // char
    19,   // name
    20,   // int8
    21,   // int2
    23,   // int4
    25,   // text
    26,   // oid
    114,  // json
    700,  // float4
    701,  // float8
    705,  // unknown
    1042, // bpchar
    1043, // varchar
    1082, // date
    1083, // time
    1114, // timestamp
    1184, // timestamptz
    1186, // interval
    1266, // timetz
    1700, // numeric
    2950, // uuid
    3802, // jsonb
    199,  // json[]
    1000, // bool[]
    1001, // bytea[]
    1002, // char[]
    1003, // name[]
    1005, // int2[]
    1007, // int4[]
    1009, // text[]
    1014, // bpchar[]
    1015, // varchar[]
    1016, // int8[]
    1021, // float4[]
    1022, // float8[]
    1028, // oid[]
    1115, // timestamp[]
    1182, // date[]
    1183, // time[]
    1185, // timestamptz[]
    1187, // interval[]
    1231, // numeric[]
    1270, // timetz[]
    2951, // uuid[]
    3807, // jsonb[]
];

/// Why a `Parse`'s parameter types are not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The count and the OIDs that follow it do not agree.
    Malformed,
    /// A type whose input may look up objects or roles (its OID).
    Type(u32),
}

/// The first reason `types` (a `Parse`'s count and OIDs, as sent) is not
/// admitted, if any.
pub fn refused(types: &[u8]) -> Option<Refused> {
    let Some((count, oids)) = types.split_first_chunk::<2>() else {
        return (!types.is_empty()).then_some(Refused::Malformed);
    };
    let count = i16::from_be_bytes(*count);
    if count < 0 || oids.len() != count as usize * 4 {
        return Some(Refused::Malformed);
    }
    oids.chunks_exact(4)
        .map(|oid| u32::from_be_bytes([oid[0], oid[1], oid[2], oid[3]]))
        .find(|oid| !PLAIN.contains(oid))
        .map(Refused::Type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(oids: &[u32]) -> Vec<u8> {
        let mut out = (oids.len() as i16).to_be_bytes().to_vec();
        for oid in oids {
            out.extend_from_slice(&oid.to_be_bytes());
        }
        out
    }

    #[test]
    fn plain_types_and_none_are_admitted() {
        assert_eq!(refused(&[]), None);
        assert_eq!(refused(&types(&[])), None);
        assert_eq!(refused(&types(&[0, 23, 25, 1043, 1114, 1009])), None);
    }

    #[test]
    fn lookup_types_are_refused() {
        // aclitem, aclitem[], regrole, regnamespace, regclass, regproc.
        for oid in [1033, 1034, 4096, 4089, 2205, 24] {
            assert_eq!(refused(&types(&[23, oid])), Some(Refused::Type(oid)));
        }
    }

    #[test]
    fn a_count_that_disagrees_is_refused() {
        assert_eq!(refused(&[0]), Some(Refused::Malformed));
        assert_eq!(refused(&[0, 2, 0, 0, 0, 23]), Some(Refused::Malformed));
        assert_eq!(refused(&[0xff, 0xff]), Some(Refused::Malformed));
    }
}
