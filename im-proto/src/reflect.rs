//! What the descriptor set says about the protocol's messages, for code that reads raw bytes
//! (a server relaying bodies as received): which field numbers a message declares, so that a
//! field it does not declare is known to be newer than this build, which number a field name
//! has, so that numbers written by hand can be checked, and which fields make up a oneof, so
//! that raw bytes can be read as protobuf reads them (a later member replaces an earlier one).

use std::{collections::HashMap, sync::LazyLock};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Every message's fields, read once from the descriptor set.
#[derive(Default)]
struct Index {
    /// Full message name -> its field numbers, ascending.
    numbers: HashMap<String, Vec<u32>>,
    /// (full message name, field name) -> field number.
    named: HashMap<(String, String), u32>,
    /// Full message name -> oneof name -> its members' field numbers, ascending.
    oneofs: HashMap<String, HashMap<String, Vec<u32>>>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    // The set is built into this crate by build.rs: it always decodes.
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut index = Index::default();
    for file in &set.file {
        for message in &file.message_type {
            index.add(file.package(), message);
        }
    }
    index
});

impl Index {
    fn add(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add(&name, nested);
        }
        let mut numbers = Vec::new();
        let mut oneofs: HashMap<String, Vec<u32>> = HashMap::new();
        for field in &message.field {
            if let Ok(number) = u32::try_from(field.number()) {
                numbers.push(number);
                self.named
                    .insert((name.clone(), field.name().to_owned()), number);
                // A proto3 `optional` field sits alone in a oneof the compiler made up.
                let oneof = usize::try_from(field.oneof_index.unwrap_or(-1)).ok();
                let declared = oneof.and_then(|i| message.oneof_decl.get(i));
                if let Some(oneof) = declared.filter(|_| !field.proto3_optional()) {
                    oneofs
                        .entry(oneof.name().to_owned())
                        .or_default()
                        .push(number);
                }
            }
        }
        numbers.sort_unstable();
        for members in oneofs.values_mut() {
            members.sort_unstable();
        }
        self.oneofs.insert(name.clone(), oneofs);
        self.numbers.insert(name, numbers);
    }
}

/// The field numbers `message` (a full name such as `im.v1.Content`) declares, ascending;
/// `None` for a message the protocol does not have.
pub fn field_numbers(message: &str) -> Option<&'static [u32]> {
    INDEX.numbers.get(message).map(Vec::as_slice)
}

/// The number of the field named `field` in `message`.
pub fn field_number(message: &str, field: &str) -> Option<u32> {
    INDEX
        .named
        .get(&(message.to_owned(), field.to_owned()))
        .copied()
}

/// The field numbers of the members of `oneof` in `message`, ascending; `None` for a oneof the
/// message does not have.
pub fn oneof_numbers(message: &str, oneof: &str) -> Option<&'static [u32]> {
    INDEX
        .oneofs
        .get(message)
        .and_then(|oneofs| oneofs.get(oneof))
        .map(Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_list_their_fields() {
        assert_eq!(field_numbers("im.v1.Text"), Some(&[1][..]));
        assert_eq!(
            field_numbers("im.v1.Content"),
            Some(&[1, 2, 3, 4, 5, 6][..])
        );
        assert_eq!(field_numbers("im.v1.Nothing"), None);
        assert_eq!(field_number("im.v1.SendRequest", "body"), Some(3));
        assert_eq!(field_number("im.v1.SendRequest", "nothing"), None);
    }

    #[test]
    fn oneofs_list_their_members() {
        assert_eq!(
            oneof_numbers("im.v1.MessageBody", "kind"),
            Some(&[1, 2, 3, 4, 5, 6][..])
        );
        assert_eq!(oneof_numbers("im.v1.Content", "kind"), Some(&[1, 2, 3][..]));
        let bodies = oneof_numbers("im.v1.ClientFrame", "body").expect("a oneof");
        assert_eq!(bodies.first(), Some(&2), "request_id is no member");
        assert_eq!(oneof_numbers("im.v1.Content", "mentions"), None);
        assert_eq!(oneof_numbers("im.v1.Nothing", "kind"), None);
    }
}
