{#-
    Every web record landed, its payload parsed once into typed, normalized columns, and checked on its
    own: `invalid_reason` is null when it passes (int_web__deduplicated then looks for duplicates).
    Two formats (message_format): the native clickstream tracker's events, and Segment-spec messages
    landed by the ingestion API (macros/layers/segment_spec.sql, docs/sources.md). Both become the
    same columns: messageId is the event_id, a page a page_view, an identify carries its traits.
    Incremental over new bronze rows; streams, so memory stays flat whatever the batch size.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

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
{#- Segment-spec messages: page fields in properties or context.page, campaign in context.campaign -#}
{%- do payload_fields.update(cdp.segment_payload_fields()) -%}
{%- do payload_fields.update({
    'properties.url': 'string', 'properties.path': 'string', 'properties.title': 'string',
    'properties.referrer': 'string',
    'context.page.url': 'string', 'context.page.path': 'string', 'context.page.title': 'string',
    'context.page.referrer': 'string',
    'context.campaign.source': 'string', 'context.campaign.medium': 'string', 'context.campaign.name': 'string',
    'context.campaign.term': 'string', 'context.campaign.content': 'string',
    'context.userAgent': 'string',
}) -%}

{#- consent_updated: a consent banner or preference centre (properties channel, status) -#}
{%- set event_types = ['page_view', 'brochure_download', 'form_submit', 'consent_updated'] -%}
{#- Segment track names (snake_cased) that are one of the event types above -#}
{%- set segment_tracks = {
    'page_view': 'page_view', 'page_viewed': 'page_view',
    'brochure_download': 'brochure_download', 'brochure_downloaded': 'brochure_download',
    'form_submit': 'form_submit', 'form_submitted': 'form_submit',
    'consent_updated': 'consent_updated',
} -%}

with

new_records as (

    select * from {{ ref('brz_web__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields, passthrough=['payload']) }}

),

classified as (

    select
        *,
        case when {{ cdp.segment_message_detected() }} then 'segment' else 'native' end as message_format
    from extracted

),

unified as (

    -- one set of raw columns whatever the format: the native tracker's fields, or the Segment
    -- message's (a page in properties, any call's page in context.page, campaign in context.campaign)
    select
        record_key,
        batch_id,
        position,
        file_name,
        parse_error,
        is_valid_json,
        is_json_object,
        message_format,
        payload__event_id,
        payload__event,
        payload__anonymous_id,
        payload__type,
        payload__messageid,
        payload__userid,
        payload__anonymousid,
        payload__previousid,
        payload__groupid,
        payload__timestamp,
        payload__receivedat,
        {{ cdp.by_format('payload__messageid', 'payload__event_id') }} as event_id_raw,
        {{ cdp.by_format(cdp.segment_anonymous_id(), 'payload__anonymous_id') }} as anonymous_id_raw,
        {{ cdp.by_format('payload__userid', 'cast(null as ' ~ dbt.type_string() ~ ')') }} as user_id_raw,
        {{ cdp.by_format(cdp.segment_event_type(segment_tracks), 'payload__event') }} as event_type_raw,
        {{ cdp.by_format('coalesce(payload__event, payload__name)', 'payload__event') }} as event_name,
        {{ cdp.by_format('coalesce(payload__properties__url, payload__context__page__url)', 'payload__page__url') }} as page_url,
        {{ cdp.by_format('coalesce(payload__properties__path, payload__context__page__path)', 'payload__page__path') }} as page_path,
        {{ cdp.by_format('coalesce(payload__properties__title, payload__context__page__title, payload__name)', 'payload__page__title') }} as page_title,
        {{ cdp.by_format('coalesce(payload__properties__referrer, payload__context__page__referrer)', 'payload__page__referrer') }} as page_referrer,
        {{ cdp.by_format('payload__context__campaign__source', 'payload__utm__source') }} as utm_source,
        {{ cdp.by_format('payload__context__campaign__medium', 'payload__utm__medium') }} as utm_medium,
        {{ cdp.by_format('payload__context__campaign__name', 'payload__utm__campaign') }} as utm_campaign,
        {{ cdp.by_format('payload__context__campaign__term', 'payload__utm__term') }} as utm_term,
        {{ cdp.by_format('payload__context__campaign__content', 'payload__utm__content') }} as utm_content,
        {{ cdp.by_format('payload__context__useragent', 'payload__user_agent') }} as user_agent,
        {{ cdp.by_format(cdp.segment_trait('email'), 'payload__traits__email') }} as email_raw,
        {{ cdp.by_format(cdp.segment_trait('phone'), 'payload__traits__phone') }} as phone_raw,
        {{ cdp.by_format('coalesce(payload__traits__firstname, payload__traits__first_name)', 'payload__traits__first_name') }} as first_name,
        {{ cdp.by_format('coalesce(payload__traits__lastname, payload__traits__last_name)', 'payload__traits__last_name') }} as last_name,
        {{ cdp.by_format('coalesce(payload__traits__country, payload__traits__address__country, payload__context__traits__address__country)', 'payload__traits__country') }} as country_raw,
        -- a Segment message's time is its timestamp, else when the API received it
        {{ cdp.by_format('coalesce(payload__timestamp, payload__receivedat)', 'payload__timestamp') }} as occurred_at_raw,
        {{ cdp.by_format('payload__sentat', 'payload__sent_at') }} as sent_at_raw,
        payload__session_id,
        payload__fingerprint,
        payload__properties__program,
        payload__properties__brochure_id,
        payload__properties__form_id,
        payload__properties__channel,
        payload__properties__status,
        -- a Segment message's own properties, kept whole (custom events have nothing else)
        case when message_format = 'segment' then {{ cdp.json_subdocument('payload', 'properties') }} end
            as segment_properties,
        landed_at,
        bronze_loaded_at
    from classified

),

country_codes as (

    select * from {{ cdp.country_calling_codes_lookup() }}

),

typed as (

    select
        -- lineage
        unified.record_key,
        unified.batch_id,
        unified.position,
        unified.file_name,
        unified.parse_error,
        unified.is_valid_json,
        unified.is_json_object,
        unified.message_format,

        -- ids
        nullif(trim(unified.event_id_raw), '') as event_id,
        nullif(trim(unified.anonymous_id_raw), '') as anonymous_id,
        nullif(trim(unified.user_id_raw), '') as user_id,
        nullif(trim(unified.payload__session_id), '') as session_id,
        nullif(trim(unified.payload__fingerprint), '') as fingerprint_id,

        -- event
        nullif(trim(unified.event_type_raw), '') as event_type,
        nullif(trim(unified.payload__type), '') as event_category,
        unified.event_name,
        unified.payload__properties__program as program,
        unified.payload__properties__brochure_id as brochure_id,
        unified.payload__properties__form_id as form_id,
        lower(nullif(trim(unified.payload__properties__channel), '')) as consent_channel,
        lower(nullif(trim(unified.payload__properties__status), '')) as consent_status,
        unified.payload__groupid as group_id,
        case when unified.payload__type = 'alias' then unified.payload__previousid end as previous_id,
        unified.segment_properties,

        -- page and campaign
        unified.page_url,
        unified.page_path,
        unified.page_title,
        unified.page_referrer,
        unified.utm_source,
        unified.utm_medium,
        unified.utm_campaign,
        unified.utm_term,
        unified.utm_content,
        unified.user_agent,

        -- identity traits (form submits; Segment identify traits, context.traits, properties)
        {{ cdp.normalize_email('unified.email_raw') }} as email,
        unified.email_raw,
        {{ cdp.normalize_phone_with_calling_code('unified.phone_raw', 'country_codes.calling_code', 'country_codes.trunk_prefix') }} as phone,
        unified.phone_raw,
        unified.first_name,
        unified.last_name,
        unified.country_raw,

        -- timestamps
        unified.occurred_at_raw,
        {{ cdp.parse_timestamp('unified.occurred_at_raw') }} as occurred_at,
        {{ cdp.parse_timestamp('unified.sent_at_raw') }} as sent_at,
        -- when the ingestion API received a Segment message; a landed file was received when landed
        coalesce({{ cdp.parse_timestamp('unified.payload__receivedat') }}, unified.landed_at) as received_at,
        unified.landed_at,
        unified.bronze_loaded_at,

        -- the Segment envelope, for the checks
        unified.payload__type,
        unified.payload__event,
        unified.payload__messageid,
        unified.payload__userid,
        unified.payload__anonymousid,
        unified.payload__previousid,
        unified.payload__groupid,
        unified.payload__timestamp,
        unified.payload__receivedat

    from unified
    left join country_codes
        on country_codes.lookup_key = {{ cdp.country_lookup_key('unified.country_raw') }}

),

validated as (

    select
        {{ cdp.star_except(['payload__type', 'payload__event', 'payload__messageid', 'payload__userid',
            'payload__anonymousid', 'payload__previousid', 'payload__groupid', 'payload__timestamp',
            'payload__receivedat'], 'typed') }},
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            case when message_format = 'segment' then {{ cdp.segment_invalid_reason() }} end,
            case when message_format = 'native' then {{ cdp.missing_required_field({
                'event_id': 'event_id', 'event_type': 'event', 'anonymous_id': 'anonymous_id',
                'occurred_at_raw': 'timestamp'}) }} end,
            case
                when message_format = 'native' and event_type not in ('{{ event_types | join("', '") }}')
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
