{#-
    Current consent: one row per profile and channel (email, whatsapp, sms, push, analytics), for
    every profile. What channels, the API and reverse ETL check before contacting anyone.

    1. Per identifier and channel, the latest statement of the ledger (gold.consent_events) holds: a
       START after a STOP on the same phone opts it in again (a tie in time: the opt-out wins).
    2. Per profile and channel, the most restrictive of its identifiers wins: any identifier opted out
       opts the whole profile out; else any identifier opted in opts it in.
    3. Without any statement, the default:
       - email: implied (legitimate interest) when the profile has an email address, else unknown;
       - whatsapp: implied (legitimate interest) when the person wrote to us on WhatsApp (an inbound
         conversation we may answer), else unknown: a phone number alone is no permission;
       - sms, push: unknown (they need an explicit opt-in: there is no implied permission);
       - analytics: implied (legitimate interest: first-party measurement of our own services).
    can_contact: opted_in, or implied where the channel allows contact on legitimate interest
    (email, analytics, and whatsapp within a conversation the person started). Never for opted_out
    or unknown. A hard-bounced address may still be contactable by consent: senders also check
    gold.suppression_list.

    Incremental: the profiles whose identifiers were rewritten since the last run (a new event, a
    merge, a relabelled component: gold.profile_identifiers.updated_at) or that got a new statement
    are recomputed whole; rows of profiles that no longer exist (merged into another) are deleted.
-#}
{{ config(
    materialized='incremental',
    unique_key='profile_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

{%- set channels = cdp.consent_channels() %}
{%- set identifiers_relation = ref('profile_identifiers') %}

{%- if execute and flags.WHICH in ('run', 'build') and is_incremental() %}
    {#- a profile that no longer exists (merged into an older one) goes -#}
    {%- do run_query('delete from ' ~ this ~ ' as c
        where not exists (select 1 from ' ~ identifiers_relation ~ ' as i where i.profile_id = c.profile_id)') %}
{%- endif %}

with

identifiers as (

    select * from {{ identifiers_relation }}

),

ledger as (

    select * from {{ ref('consent_events') }}

),

{% if is_incremental() %}
{%- set since = cdp.watermark('updated_at') %}

affected_profiles as (

    select profile_id from identifiers
    where updated_at > {{ since }}
    union distinct
    select i.profile_id
    from ledger as l
    inner join identifiers as i
        on i.identifier_type = l.identifier_type
        and i.identifier_value = l.identifier_value
    where l.loaded_at > {{ since }}

),

{% endif %}

profile_identifiers as (

    -- one row per profile and identifier (profile_identifiers has one per source that saw it)
    select
        profile_id,
        identifier_type,
        identifier_value,
        min(first_seen_at) as first_seen_at,
        -- the person wrote to us from this number (WhatsApp records are inbound messages)
        min(case when source = 'whatsapp' then first_seen_at end) as first_whatsapp_at
    from identifiers
    {% if is_incremental() -%}
    where profile_id in (select profile_id from affected_profiles)
    {%- endif %}
    group by profile_id, identifier_type, identifier_value

),

latest_statements as (

    -- the latest statement per identifier and channel
    select *
    from (
        select
            l.*,
            row_number() over (
                partition by l.identifier_type, l.identifier_value, l.channel
                order by l.occurred_at desc, case when l.status = 'opted_out' then 0 else 1 end, l.consent_event_id
            ) as statement_rank
        from ledger as l
        where exists (
            select 1 from profile_identifiers as i
            where i.identifier_type = l.identifier_type
                and i.identifier_value = l.identifier_value
        )
    ) as ranked
    where statement_rank = 1

),

profile_statements as (

    -- per profile and channel, the most restrictive identifier: opted_out before opted_in, then latest
    select *
    from (
        select
            i.profile_id,
            s.channel,
            s.status,
            s.legal_basis,
            s.occurred_at,
            s.source,
            row_number() over (
                partition by i.profile_id, s.channel
                order by case when s.status = 'opted_out' then 0 else 1 end, s.occurred_at desc, s.consent_event_id
            ) as profile_rank
        from latest_statements as s
        inner join profile_identifiers as i
            on i.identifier_type = s.identifier_type
            and i.identifier_value = s.identifier_value
    ) as ranked
    where profile_rank = 1

),

profile_facts as (

    -- what the defaults depend on
    select
        profile_id,
        min(first_seen_at) as first_seen_at,
        min(case when identifier_type = 'email' then first_seen_at end) as first_email_at,
        min(first_whatsapp_at) as first_whatsapp_at
    from profile_identifiers
    group by profile_id

),

channels as (

    {%- for channel in channels %}
    select '{{ channel }}' as channel
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}

),

defaults as (

    select
        f.profile_id,
        c.channel,
        case
            when c.channel = 'email' and f.first_email_at is not null then 'implied'
            when c.channel = 'whatsapp' and f.first_whatsapp_at is not null then 'implied'
            when c.channel = 'analytics' then 'implied'
            else 'unknown'
        end as status,
        case
            when c.channel = 'email' then f.first_email_at
            when c.channel = 'whatsapp' then f.first_whatsapp_at
            when c.channel = 'analytics' then f.first_seen_at
        end as status_at
    from profile_facts as f
    cross join channels as c

),

final as (

    select
        d.profile_id,
        d.channel,
        coalesce(s.status, d.status) as status,
        case
            when s.status = 'opted_in' then 'consent'
            when s.status = 'opted_out' then 'none'
            when d.status = 'implied' then 'legitimate_interest'
            else 'none'
        end as legal_basis,
        coalesce(s.status = 'opted_in', false)
            or (s.status is null and d.status = 'implied' and d.channel in ('email', 'whatsapp', 'analytics'))
            as can_contact,
        case when s.status is not null then s.occurred_at else d.status_at end as status_at,
        coalesce(s.source, 'default') as source,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from defaults as d
    left join profile_statements as s
        on s.profile_id = d.profile_id
        and s.channel = d.channel

)

select * from final
