//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    conversations (conversation_id) {
        conversation_id -> Text,
        last_seq -> BigInt,
    }
}

diesel::table! {
    entries (conversation_id, seq) {
        conversation_id -> Text,
        seq -> BigInt,
        server_msg_id -> Text,
        sender_user_id -> Text,
        sender_device_id -> Text,
        client_msg_id -> Text,
        kind -> Integer,
        target_seq -> BigInt,
        body -> Binary,
        server_time_ms -> BigInt,
    }
}

diesel::table! {
    read_cursors (conversation_id, user_id) {
        conversation_id -> Text,
        user_id -> Text,
        read_seq -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    direct_members (user_id, conversation_id) {
        user_id -> Text,
        conversation_id -> Text,
    }
}
