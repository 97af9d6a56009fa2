{#-
    Every inbound WhatsApp message landed (Twilio webhook parameters), parsed once into typed columns
    (sender in E.164), and checked on its own: `invalid_reason` is null when it passes
    (int_whatsapp__deduplicated then looks for duplicates). Incremental over new bronze rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{%- set payload_fields = {
    'MessageSid': 'string', 'AccountSid': 'string', 'From': 'string', 'To': 'string', 'WaId': 'string',
    'ProfileName': 'string', 'Body': 'string', 'NumMedia': 'string', 'NumSegments': 'string',
    'MessageType': 'string', 'SmsStatus': 'string', 'ApiVersion': 'string',
    'MediaUrl0': 'string', 'MediaContentType0': 'string', 'ReceivedAt': 'string',
} -%}

{#- Twilio's default opt-out and opt-in keywords (a reply of exactly one of them). -#}
{%- set opt_out_keywords = ['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'OPTOUT', 'REVOKE'] -%}
{%- set opt_in_keywords = ['START', 'YES', 'UNSTOP'] -%}

with

new_records as (

    select * from {{ ref('brz_whatsapp__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields) }}

),

typed as (

    select
        -- lineage
        record_key,
        batch_id,
        position,
        file_name,
        parse_error,
        is_valid_json,
        is_json_object,

        -- ids
        nullif(trim(payload__messagesid), '') as message_id,
        nullif(trim(payload__accountsid), '') as account_id,
        nullif(trim(payload__waid), '') as wa_id,

        -- sender and recipient
        {{ cdp.normalize_phone('payload__from') }} as phone,
        payload__from as phone_raw,
        {{ cdp.normalize_phone('payload__to') }} as to_phone,
        payload__profilename as profile_name,

        -- message
        payload__body as body,
        payload__messagetype as message_type,
        payload__smsstatus as sms_status,
        payload__apiversion as api_version,
        payload__mediaurl0 as media_url,
        payload__mediacontenttype0 as media_content_type,
        {{ cdp.try_cast('payload__nummedia', 'bigint') }} as media_count,
        {{ cdp.try_cast('payload__numsegments', 'bigint') }} as segment_count,

        -- booleans
        coalesce(upper(trim(payload__body)) in ('{{ opt_out_keywords | join("', '") }}'), false) as is_opt_out_keyword,
        coalesce(upper(trim(payload__body)) in ('{{ opt_in_keywords | join("', '") }}'), false) as is_opt_in_keyword,

        -- timestamps
        payload__receivedat as received_at_raw,
        {{ cdp.parse_timestamp('payload__receivedat') }} as received_at,
        landed_at,
        bronze_loaded_at

    from extracted

),

validated as (

    select
        typed.*,
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            {{ cdp.missing_required_field({
                'message_id': 'MessageSid', 'phone_raw': 'From', 'received_at_raw': 'ReceivedAt'}) }},
            case
                when phone is null
                    then 'From is not a phone number: ' || {{ cdp.quoted_value('phone_raw') }}
            end,
            case
                when received_at is null
                    then 'ReceivedAt is not a valid ISO 8601 time: ' || {{ cdp.quoted_value('received_at_raw') }}
            end
        ) as invalid_reason
    from typed

)

select * from validated
