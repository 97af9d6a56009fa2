{#-
    What happened on each anchor identifier, per source: counts, first/last seen, consent signals and
    the latest contact traits (from the CRM, web forms and app logins). Every event belongs to the
    profile of its anchor (its strongest identifier; none when that is blocklisted), so gold profiles are a
    roll-up of these rows: 10M events become a few million rows that are cheap to regroup when
    profiles merge.
    Incremental: new events are aggregated and combined with the rows they touch; sums, min/max and
    "latest by (time, event_id)" combine exactly, so incremental runs equal a full refresh.
-#}
{{ config(
    materialized='incremental',
    unique_key='anchor_source_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
) }}

{%- set counts = {
    'page_views': "event_type = 'page_view'",
    'brochure_downloads': "event_type = 'brochure_download'",
    'form_submits': "event_type = 'form_submit'",
    'app_sessions': "event_type in ('app_open', 'login')",
    'lessons_completed': "event_type = 'lesson_completed'",
    'quizzes_submitted': "event_type = 'quiz_submitted'",
    'email_opens': "event_type = 'email_open'",
    'email_clicks': "event_type = 'email_click'",
    'email_bounces': "event_type = 'email_bounce'",
    'email_unsubscribes': "event_type = 'email_unsubscribe'",
    'email_spam_reports': "event_type = 'email_spamreport'",
} -%}
{%- set is_trait_event = "(e.source = 'salesforce' or e.event_type in ('form_submit', 'login'))" -%}
{%- set trait_keys = ['first_name', 'last_name', 'birth_date', 'mailing_city', 'mailing_postal_code',
    'mailing_country', 'country', 'program_interest', 'application_stage', 'enrollment_status',
    'has_opted_out_of_email'] -%}
{%- set traits = ['first_name', 'last_name', 'email', 'phone', 'birth_date', 'city', 'postal_code', 'country',
    'program_interest', 'application_stage', 'enrollment_status', 'has_opted_out_of_email'] -%}

with

new_events as (

    select * from {{ ref('events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('last_bronze_loaded_at') }}
    {%- endif %}

),

trait_events as (

    select
        {{ cdp.event_anchor_type() }} as anchor_type,
        {{ cdp.event_anchor_value() }} as anchor_value,
        e.*,
        -- contact traits, on the events that carry them, with one JSON parse per event
        case when {{ is_trait_event }} then {{ cdp.json_text_list('e.properties', trait_keys) }} end as trait_values,
        case when {{ is_trait_event }} then {{ cdp.timestamp_sort_key('e.occurred_at', 'e.event_id') }} end
            as traits_sort_key
    from new_events as e

),

anchored as (

    select
        anchor_type,
        anchor_value,
        source,
        event_type,
        event_id,
        occurred_at,
        properties,
        bronze_loaded_at,
        traits_sort_key,
        {{ cdp.list_item('trait_values', 0) }} as trait_first_name,
        {{ cdp.list_item('trait_values', 1) }} as trait_last_name,
        case when traits_sort_key is not null then email end as trait_email,
        case when traits_sort_key is not null then phone end as trait_phone,
        {{ cdp.try_cast(cdp.list_item('trait_values', 2), 'date') }} as trait_birth_date,
        {{ cdp.list_item('trait_values', 3) }} as trait_city,
        {{ cdp.list_item('trait_values', 4) }} as trait_postal_code,
        -- CRM MailingCountry, or the web form's country
        coalesce({{ cdp.list_item('trait_values', 5) }}, {{ cdp.list_item('trait_values', 6) }}) as trait_country,
        {{ cdp.list_item('trait_values', 7) }} as trait_program_interest,
        {{ cdp.list_item('trait_values', 8) }} as trait_application_stage,
        {{ cdp.list_item('trait_values', 9) }} as trait_enrollment_status,
        {{ cdp.try_cast(cdp.list_item('trait_values', 10), 'boolean') }} as trait_has_opted_out_of_email,
        case when source = 'whatsapp' then {{ cdp.json_text('properties', 'is_opt_out_keyword') }} = 'true' end
            as is_whatsapp_opt_out,
        case when source = 'whatsapp' then {{ cdp.json_text('properties', 'is_opt_in_keyword') }} = 'true' end
            as is_whatsapp_opt_in
    from trait_events

),

aggregated as (

    select
        source || '|' || {{ cdp.identifier_key('anchor_type', 'anchor_value') }} as anchor_source_key,
        {{ cdp.identifier_key('anchor_type', 'anchor_value') }} as anchor_key,
        source,
        count(*) as event_count,
        {%- for name, condition in counts.items() %}
        count(case when {{ condition }} then 1 end) as {{ name }},
        {%- endfor %}
        sum(case when event_type = 'quiz_submitted' then {{ cdp.try_cast(cdp.json_text('properties', 'quiz_score'), 'double') }} end)
            as quiz_score_sum,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at,
        max(case when event_type in ('email_unsubscribe', 'email_spamreport') then occurred_at end) as last_email_opt_out_at,
        max(case when is_whatsapp_opt_out then occurred_at end) as last_whatsapp_opt_out_at,
        max(case when is_whatsapp_opt_in then occurred_at end) as last_whatsapp_opt_in_at,
        max(traits_sort_key) as traits_sort_key,
        {%- for trait in traits %}
        max_by(trait_{{ trait }}, traits_sort_key) as {{ trait }},
        {%- endfor %}
        max(bronze_loaded_at) as last_bronze_loaded_at
    from anchored
    where anchor_type is not null
    group by anchor_type, anchor_value, source

),

{% if is_incremental() %}

combined as (

    select
        n.anchor_source_key,
        n.anchor_key,
        n.source,
        n.event_count + coalesce(o.event_count, 0) as event_count,
        {%- for name in counts.keys() %}
        n.{{ name }} + coalesce(o.{{ name }}, 0) as {{ name }},
        {%- endfor %}
        case
            when n.quiz_score_sum is null then o.quiz_score_sum
            else n.quiz_score_sum + coalesce(o.quiz_score_sum, 0)
        end as quiz_score_sum,
        least(n.first_seen_at, coalesce(o.first_seen_at, n.first_seen_at)) as first_seen_at,
        greatest(n.last_seen_at, coalesce(o.last_seen_at, n.last_seen_at)) as last_seen_at,
        {%- for name in ['last_email_opt_out_at', 'last_whatsapp_opt_out_at', 'last_whatsapp_opt_in_at'] %}
        coalesce(greatest(n.{{ name }}, o.{{ name }}), n.{{ name }}, o.{{ name }}) as {{ name }},
        {%- endfor %}
        coalesce(greatest(n.traits_sort_key, o.traits_sort_key), n.traits_sort_key, o.traits_sort_key) as traits_sort_key,
        {%- for trait in traits %}
        case
            when o.traits_sort_key is null or n.traits_sort_key > o.traits_sort_key then n.{{ trait }}
            else o.{{ trait }}
        end as {{ trait }},
        {%- endfor %}
        n.last_bronze_loaded_at
    from aggregated as n
    left join {{ this }} as o
        on o.anchor_source_key = n.anchor_source_key

)

{% else %}

combined as (

    select * from aggregated

)

{% endif %}

select * from combined
