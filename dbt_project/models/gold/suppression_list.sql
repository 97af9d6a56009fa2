{#-
    Who must not be contacted on a channel, per identifier, hashed: analytics and destinations can
    match against it without the warehouse handing out addresses or numbers.
    - every identifier whose latest consent statement on a channel (gold.consent_events) is an
      opt-out: unsubscribed, spam_report, whatsapp_stop, crm_opt_out or api;
    - every email address that bounced hard (SendGrid bounce of type `bounce`; `blocked` is a soft
      bounce and passes): hard_bounce. A bounce is deliverability, not consent, so it is here and not
      in the ledger, and a later opt-in does not lift it.
    One row per identifier, channel and reason; `since` is when the suppression began (the opt-out,
    or the first hard bounce). A table: the ledger and the bounces are small.
-#}
{{ config(materialized='table') }}

with

latest_statements as (

    select *
    from (
        select
            *,
            row_number() over (
                partition by identifier_type, identifier_value, channel
                order by occurred_at desc, case when status = 'opted_out' then 0 else 1 end, consent_event_id
            ) as statement_rank
        from {{ ref('consent_events') }}
    ) as ranked
    where statement_rank = 1

),

opt_outs as (

    select
        identifier_type,
        identifier_value,
        channel,
        reason,
        occurred_at as since
    from latest_statements
    where status = 'opted_out'

),

hard_bounces as (

    select
        'email' as identifier_type,
        email as identifier_value,
        'email' as channel,
        'hard_bounce' as reason,
        min(occurred_at) as since
    from {{ ref('events') }}
    where source = 'email'
        and event_type = 'email_bounce'
        and {{ cdp.json_text('properties', 'bounce_type') }} = 'bounce'
        and email is not null
    group by email

),

suppressions as (

    select * from opt_outs
    union all
    select * from hard_bounces

),

final as (

    select
        {{ cdp.md5_hex("identifier_type || ':' || identifier_value || '|' || channel || '|' || reason") }} as suppression_id,
        {{ cdp.md5_hex('identifier_value') }} as identifier_hash,
        identifier_type,
        channel,
        reason,
        since,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from suppressions

)

select * from final
