{#- Accepted inbound WhatsApp messages: sender in E.164, received time in UTC, one row per MessageSid. -#}
{{ config(materialized='view') }}

with

checked as (

    select * from {{ ref('int_whatsapp__checked') }}
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        message_id,
        account_id,
        wa_id,

        -- sender and recipient
        phone,
        phone_raw,
        to_phone,
        profile_name,

        -- message
        body,
        message_type,
        sms_status,
        api_version,
        media_url,
        media_content_type,
        media_count,
        segment_count,

        -- booleans
        is_opt_out_keyword,
        is_opt_in_keyword,

        -- timestamps
        received_at,
        landed_at,
        bronze_loaded_at,

        -- lineage
        record_key,
        batch_id,
        position,
        file_name

    from checked

)

select * from renamed
