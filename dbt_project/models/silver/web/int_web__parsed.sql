{#-
    Every web record landed, its payload parsed once into typed, normalized columns, and checked on its
    own: `invalid_reason` is null when it passes (int_web__deduplicated then looks for duplicates).
    Incremental over new bronze rows; streams, so memory stays flat whatever the batch size.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns') }}

{%- set payload_fields = {
    'event_id': 'string', 'type': 'string', 'event': 'string',
    'anonymous_id': 'string', 'session_id': 'string', 'fingerprint': 'string',
    'timestamp': 'string', 'sent_at': 'string',
    'page.url': 'string', 'page.path': 'string', 'page.title': 'string', 'page.referrer': 'string',
    'utm.source': 'string', 'utm.medium': 'string', 'utm.campaign': 'string',
    'utm.term': 'string', 'utm.content': 'string',
    'user_agent': 'string',
    'properties.program': 'string', 'properties.brochure_id': 'string', 'properties.form_id': 'string',
    'properties.channel': 'string', 'properties.status': 'string',
    'traits.email': 'string', 'traits.first_name': 'string', 'traits.last_name': 'string',
    'traits.phone': 'string', 'traits.country': 'string',
} -%}

{#- consent_updated: a consent banner or preference centre (properties channel, status) -#}
{%- set event_types = ['page_view', 'brochure_download', 'form_submit', 'consent_updated'] -%}

with

new_records as (

    select * from {{ ref('brz_web__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields) }}

),

country_codes as (

    select * from {{ cdp.country_calling_codes_lookup() }}

),

typed as (

    select
        -- lineage
        extracted.record_key,
        extracted.batch_id,
        extracted.position,
        extracted.file_name,
        extracted.parse_error,
        extracted.is_valid_json,
        extracted.is_json_object,

        -- ids
        nullif(trim(extracted.payload__event_id), '') as event_id,
        nullif(trim(extracted.payload__anonymous_id), '') as anonymous_id,
        nullif(trim(extracted.payload__session_id), '') as session_id,
        nullif(trim(extracted.payload__fingerprint), '') as fingerprint_id,

        -- event
        nullif(trim(extracted.payload__event), '') as event_type,
        nullif(trim(extracted.payload__type), '') as event_category,
        extracted.payload__properties__program as program,
        extracted.payload__properties__brochure_id as brochure_id,
        extracted.payload__properties__form_id as form_id,
        lower(nullif(trim(extracted.payload__properties__channel), '')) as consent_channel,
        lower(nullif(trim(extracted.payload__properties__status), '')) as consent_status,

        -- page and campaign
        extracted.payload__page__url as page_url,
        extracted.payload__page__path as page_path,
        extracted.payload__page__title as page_title,
        extracted.payload__page__referrer as page_referrer,
        extracted.payload__utm__source as utm_source,
        extracted.payload__utm__medium as utm_medium,
        extracted.payload__utm__campaign as utm_campaign,
        extracted.payload__utm__term as utm_term,
        extracted.payload__utm__content as utm_content,
        extracted.payload__user_agent as user_agent,

        -- identity traits (form submits)
        {{ cdp.normalize_email('extracted.payload__traits__email') }} as email,
        extracted.payload__traits__email as email_raw,
        {{ cdp.normalize_phone_with_calling_code('extracted.payload__traits__phone', 'country_codes.calling_code', 'country_codes.trunk_prefix') }} as phone,
        extracted.payload__traits__phone as phone_raw,
        extracted.payload__traits__first_name as first_name,
        extracted.payload__traits__last_name as last_name,
        extracted.payload__traits__country as country_raw,

        -- timestamps
        extracted.payload__timestamp as occurred_at_raw,
        {{ cdp.parse_timestamp('extracted.payload__timestamp') }} as occurred_at,
        {{ cdp.parse_timestamp('extracted.payload__sent_at') }} as sent_at,
        extracted.landed_at,
        extracted.bronze_loaded_at

    from extracted
    left join country_codes
        on country_codes.lookup_key = {{ cdp.country_lookup_key('extracted.payload__traits__country') }}

),

validated as (

    select
        typed.*,
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            {{ cdp.missing_required_field({
                'event_id': 'event_id', 'event_type': 'event', 'anonymous_id': 'anonymous_id',
                'occurred_at_raw': 'timestamp'}) }},
            case
                when event_type not in ('{{ event_types | join("', '") }}')
                    then 'unknown event type ' || {{ cdp.quoted_value('event_type') }}
            end,
            {{ cdp.consent_update_invalid_reason('consent_channel', 'consent_status') }},
            case
                when occurred_at is null
                    then 'timestamp is not a valid ISO 8601 time: ' || {{ cdp.quoted_value('occurred_at_raw') }}
            end
        ) as invalid_reason
    from typed

)

select * from validated
