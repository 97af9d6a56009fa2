{#-
    One row per profile: a 0..100 engagement score across every source, and the windowed counts and
    trends that segments are written on.

    - Each engagement event scores its type's weight (var cdp__engagement_weights), decayed by its age:
      weight * 0.5 ^ (age_days / cdp__engagement_half_life_days). A lesson last week counts nearly in
      full, the same lesson a season ago a fraction of it.
    - The decayed points saturate into 0..100: 100 * (1 - exp(-points / cdp__engagement_saturation)).
      The score depends only on the profile's own events (not on a population rank), so a threshold
      means the same thing every day and on any data set.
    - "Now" is cdp.as_of() (see macros/segments/as_of.sql); events after it are ignored.
    One pass over gold.profile_events (silver events with their profile): every column below is a
    conditional aggregate of that single scan, which keeps 10M events to seconds.
-#}
{{ config(materialized='table', cluster_by=cdp.bigquery_cluster_by(['profile_id'])) }}

{%- set weights = var('cdp__engagement_weights') %}
{%- set half_life_days = var('cdp__engagement_half_life_days') %}
{%- set saturation = var('cdp__engagement_saturation') %}
{#- Events that score nothing but are counted: what we sent, and what stops us sending. -#}
{%- set counted_only = ['email_delivered', 'email_bounce', 'email_dropped', 'email_unsubscribe', 'email_spamreport'] %}
{%- set app_sessions = "event_type in ('app_open', 'login')" %}
{%- set app_activity = "event_type in ('app_open', 'login', 'lesson_completed', 'quiz_submitted')" %}
{%- set as_of_seconds = cdp.epoch_seconds(cdp.as_of()) %}

with

events as (

    select
        profile_id,
        source,
        event_type,
        occurred_at,
        case
            {%- for event_type, weight in weights.items() %}
            when event_type = '{{ event_type }}' then {{ weight }}
            {%- endfor %}
            else 0
        end as weight,
        ({{ as_of_seconds }} - {{ cdp.epoch_seconds('occurred_at') }}) / 86400.0 as age_days
    from {{ ref('profile_events') }}
    where profile_id is not null
        and occurred_at <= {{ cdp.as_of() }}
        and event_type in (
            {%- for event_type in (weights.keys() | list) + counted_only %}
            '{{ event_type }}'{{ ',' if not loop.last }}
            {%- endfor %}
        )

),

decayed as (

    select
        *,
        weight * exp(-ln(2) * age_days / {{ half_life_days }}) as points
    from events

),

aggregated as (

    select
        profile_id,

        -- recency-weighted points, per source
        sum(points) as engagement_points,
        {%- for source in ['web', 'app', 'email', 'whatsapp'] %}
        coalesce(sum(case when source = '{{ source }}' then points end), 0) as {{ source }}_points,
        {%- endfor %}

        -- web intent
        count(case when event_type = 'page_view' and occurred_at > {{ cdp.as_of(days_before=7) }} then 1 end)
            as page_views_7d,
        count(case when event_type = 'page_view' and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end)
            as page_views_30d,
        count(case when event_type = 'brochure_download' and occurred_at > {{ cdp.as_of(days_before=7) }} then 1 end)
            as brochure_downloads_7d,
        count(case when event_type = 'brochure_download' and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end)
            as brochure_downloads_30d,
        min(case when event_type = 'form_submit' then occurred_at end) as first_form_submit_at,

        -- app activity: the last 14 days against the 14 before
        count(case when {{ app_sessions }} and occurred_at > {{ cdp.as_of(days_before=14) }} then 1 end)
            as app_sessions_14d,
        count(case when event_type = 'lesson_completed' and occurred_at > {{ cdp.as_of(days_before=14) }} then 1 end)
            as lessons_completed_14d,
        count(case when event_type = 'quiz_submitted' and occurred_at > {{ cdp.as_of(days_before=14) }} then 1 end)
            as quizzes_submitted_14d,
        count(case when {{ app_activity }} and occurred_at > {{ cdp.as_of(days_before=14) }} then 1 end)
            as app_activity_14d,
        count(case when {{ app_activity }} and occurred_at > {{ cdp.as_of(days_before=28) }}
            and occurred_at <= {{ cdp.as_of(days_before=14) }} then 1 end) as app_activity_prev_14d,
        max(case when {{ app_activity }} then occurred_at end) as last_app_activity_at,

        -- messaging
        count(case when event_type = 'email_delivered' then 1 end) as emails_delivered,
        count(case when event_type = 'email_open' and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end)
            as email_opens_30d,
        count(case when event_type = 'email_click' and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end)
            as email_clicks_30d,
        count(case when event_type in ('email_bounce', 'email_dropped') then 1 end) as email_bounces,
        count(case when event_type = 'email_unsubscribe' then 1 end) as email_unsubscribes,
        count(case when event_type = 'email_spamreport' then 1 end) as email_spam_reports,
        count(case when source = 'whatsapp' and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end)
            as whatsapp_messages_30d,

        -- any engagement (events with a weight), the last 30 days against the 30 before
        count(case when weight > 0 and occurred_at > {{ cdp.as_of(days_before=30) }} then 1 end) as activity_30d,
        count(case when weight > 0 and occurred_at > {{ cdp.as_of(days_before=60) }}
            and occurred_at <= {{ cdp.as_of(days_before=30) }} then 1 end) as activity_prev_30d,
        max(case when weight > 0 then occurred_at end) as last_engaged_at
    from decayed
    group by profile_id

),

profiles as (

    select profile_id from {{ ref('profiles') }}

),

final as (

    select
        p.profile_id,

        -- the score and its parts
        cast(round(100 * (1 - exp(-coalesce(a.engagement_points, 0) / {{ saturation }})), 1) as {{ cdp.type_double() }})
            as engagement_score,
        cast(round(coalesce(a.engagement_points, 0), 3) as {{ cdp.type_double() }}) as engagement_points,
        cast(round(coalesce(a.web_points, 0), 3) as {{ cdp.type_double() }}) as web_points,
        cast(round(coalesce(a.app_points, 0), 3) as {{ cdp.type_double() }}) as app_points,
        cast(round(coalesce(a.email_points, 0), 3) as {{ cdp.type_double() }}) as email_points,
        cast(round(coalesce(a.whatsapp_points, 0), 3) as {{ cdp.type_double() }}) as whatsapp_points,

        -- trends
        case
            when coalesce(a.activity_30d, 0) = 0 and coalesce(a.activity_prev_30d, 0) = 0 then 'inactive'
            when coalesce(a.activity_prev_30d, 0) = 0 then 'new'
            when a.activity_30d < 0.5 * a.activity_prev_30d then 'declining'
            when a.activity_30d > 1.5 * a.activity_prev_30d then 'rising'
            else 'stable'
        end as engagement_trend,
        coalesce(a.activity_30d, 0) as activity_30d,
        coalesce(a.activity_prev_30d, 0) as activity_prev_30d,
        -- share of the previous 14 days' app activity that is gone (0: none lost or nothing before, 1: all)
        cast(case
            when coalesce(a.app_activity_prev_14d, 0) = 0 then 0
            when a.app_activity_14d >= a.app_activity_prev_14d then 0
            else (a.app_activity_prev_14d - a.app_activity_14d) / cast(a.app_activity_prev_14d as {{ cdp.type_double() }})
        end as {{ cdp.type_double() }}) as app_activity_decline,
        coalesce(a.app_activity_14d, 0) as app_activity_14d,
        coalesce(a.app_activity_prev_14d, 0) as app_activity_prev_14d,

        -- windowed counts
        coalesce(a.page_views_7d, 0) as page_views_7d,
        coalesce(a.page_views_30d, 0) as page_views_30d,
        coalesce(a.brochure_downloads_7d, 0) as brochure_downloads_7d,
        coalesce(a.brochure_downloads_30d, 0) as brochure_downloads_30d,
        coalesce(a.app_sessions_14d, 0) as app_sessions_14d,
        coalesce(a.lessons_completed_14d, 0) as lessons_completed_14d,
        coalesce(a.quizzes_submitted_14d, 0) as quizzes_submitted_14d,
        coalesce(a.email_opens_30d, 0) as email_opens_30d,
        coalesce(a.email_clicks_30d, 0) as email_clicks_30d,
        coalesce(a.whatsapp_messages_30d, 0) as whatsapp_messages_30d,

        -- deliverability (all time)
        coalesce(a.emails_delivered, 0) as emails_delivered,
        coalesce(a.email_bounces, 0) as email_bounces,
        coalesce(a.email_unsubscribes, 0) as email_unsubscribes,
        coalesce(a.email_spam_reports, 0) as email_spam_reports,

        -- timestamps
        a.first_form_submit_at,
        a.last_app_activity_at,
        a.last_engaged_at,
        {{ cdp.as_of() }} as as_of,
        {{ cdp.current_utc_timestamp() }} as computed_at
    from profiles as p
    left join aggregated as a
        on a.profile_id = p.profile_id

)

select * from final
