{#-
    Every SendGrid event landed, its payload parsed once into typed columns (Unix time to UTC), and
    checked on its own: `invalid_reason` is null when it passes (int_email__deduplicated then looks for
    duplicates). Incremental over new bronze rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{%- set payload_fields = {
    'sg_event_id': 'string', 'sg_message_id': 'string', 'smtp-id': 'string',
    'event': 'string', 'email': 'string', 'timestamp': 'string',
    'category': 'json', 'marketing_campaign_id': 'string', 'marketing_campaign_name': 'string',
    'template_id': 'string', 'url': 'string', 'useragent': 'string', 'ip': 'string',
    'type': 'string', 'status': 'string', 'reason': 'string', 'response': 'string',
} -%}

{%- set event_types = ['processed', 'delivered', 'open', 'click', 'bounce', 'dropped', 'unsubscribe', 'spamreport'] -%}

with

new_records as (

    select * from {{ ref('brz_email__records') }}
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
        nullif(trim(payload__sg_event_id), '') as event_id,
        nullif(trim(payload__sg_message_id), '') as message_id,
        payload__smtp_id as smtp_id,
        payload__marketing_campaign_id as campaign_id,
        payload__template_id as template_id,

        -- event
        nullif(trim(payload__event), '') as event_type,
        payload__marketing_campaign_name as campaign_name,
        payload__category as categories,
        payload__url as clicked_url,
        payload__useragent as user_agent,
        payload__ip as ip_address,
        payload__type as bounce_type,
        payload__status as bounce_status,
        payload__reason as reason,
        payload__response as response,

        -- identity
        {{ cdp.normalize_email('payload__email') }} as email,
        payload__email as email_raw,

        -- timestamps (Unix seconds)
        payload__timestamp as occurred_at_raw,
        {{ cdp.epoch_to_timestamp('payload__timestamp') }} as occurred_at,
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
                'event_id': 'sg_event_id', 'event_type': 'event', 'email_raw': 'email',
                'occurred_at_raw': 'timestamp'}) }},
            case
                when event_type not in ('{{ event_types | join("', '") }}')
                    then 'unknown event type ' || {{ cdp.quoted_value('event_type') }}
            end,
            case
                when email is null
                    then 'email is not a plausible email address: ' || {{ cdp.quoted_value('email_raw') }}
            end,
            case
                when occurred_at is null
                    then 'timestamp is not a valid Unix time in seconds: ' || {{ cdp.quoted_value('occurred_at_raw') }}
            end
        ) as invalid_reason
    from typed

)

select * from validated
