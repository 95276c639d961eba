//! What the descriptor set says about the protocol's messages, for code that reads raw bytes
//! (a server relaying bodies as received): which field numbers a message declares, so that a
//! field it does not declare is known to be newer than this build, and which number a field
//! name has, so that numbers written by hand can be checked.

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
        for field in &message.field {
            if let Ok(number) = u32::try_from(field.number()) {
                numbers.push(number);
                self.named
                    .insert((name.clone(), field.name().to_owned()), number);
            }
        }
        numbers.sort_unstable();
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
}
