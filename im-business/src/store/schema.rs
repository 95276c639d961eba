//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    users (user_id) {
        user_id -> Text,
        display_name -> Text,
        avatar_url -> Text,
        extra_json -> Text,
        active -> Bool,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    groups (group_id) {
        group_id -> Text,
        name -> Text,
        avatar_url -> Text,
        owner_user_id -> Text,
        kind -> Integer,
        join_policy -> Integer,
        max_members -> Integer,
        mute_all -> Bool,
        extra_json -> Text,
        member_count -> BigInt,
        dismissed -> Bool,
        version -> BigInt,
        created_at_ms -> BigInt,
        history_visibility -> Integer,
    }
}

diesel::table! {
    members (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
        role -> Integer,
        joined_at_ms -> BigInt,
        muted_until_ms -> BigInt,
        visible_from_seq -> BigInt,
    }
}

diesel::table! {
    notices (group_id, version) {
        group_id -> Text,
        version -> BigInt,
        body -> Binary,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    invitations (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
        inviter_user_id -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    blocks (user_id, blocked_user_id) {
        user_id -> Text,
        blocked_user_id -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    contacts (user_id, contact_user_id) {
        user_id -> Text,
        contact_user_id -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    token_revocations (user_id, device_id) {
        user_id -> Text,
        device_id -> Text,
        revoked_before_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(groups, members);

diesel::table! {
    media (media_id) {
        media_id -> Text,
        owner_user_id -> Text,
        client_upload_id -> Text,
        kind -> Integer,
        state -> Integer,
        mime_type -> Text,
        size_bytes -> BigInt,
        sha256_hex -> Text,
        file_name -> Text,
        detail -> Text,
        created_at_ms -> BigInt,
        expires_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        facts -> Text,
        multipart_id -> Text,
        part_bytes -> BigInt,
    }
}

diesel::table! {
    media_hashes (sha256_hex) {
        sha256_hex -> Text,
        verdict -> Integer,
        reason -> Text,
        actor -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    media_refs (media_id, conversation_id, seq) {
        media_id -> Text,
        conversation_id -> Text,
        seq -> BigInt,
        created_at_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(media, media_refs);

diesel::table! {
    media_usage (user_id) {
        user_id -> Text,
        stored_bytes -> BigInt,
        pending_uploads -> BigInt,
    }
}
