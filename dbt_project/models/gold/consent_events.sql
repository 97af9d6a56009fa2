{#-
    The consent ledger: every consent statement from every source, one row each, never updated.
    - email: a SendGrid unsubscribe or spam report opts the address out (an objection to contact made
      on legitimate interest). A hard bounce is deliverability, not consent: see suppression_list.
    - whatsapp: Twilio's opt-out keywords (STOP...) or a message whose intent is opt_out ("please stop
      messaging me", whatsapp_message_insights) opt the phone out; Twilio's opt-in keywords (START,
      YES, UNSTOP) opt it in again. Free text never opts in: only the explicit keywords do.
    - salesforce: HasOptedOutOfEmail at the contact's first version when true, and every change of it
      between consecutive versions (by LastModifiedDate): true opts out, back to false opts in.
    - app: push_token_registered is the device's push permission (opted in).
    - API: web and app `consent_updated` events with properties channel and status (the ingestion
      API and consent banners send them); a channel or status outside the vocabulary is ignored.
    The identifier is the event's anchor (its strongest identifier, as in gold.profile_events), so
    that a statement lands on the profile its event belongs to.
    Incremental append over the events bronze loaded since the ledger's latest row. CRM statements
    are derived from the whole version history of the contacts that got a new version (a version
    landed late can add a statement between two others); those already in the ledger are skipped.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
) }}

{%- set channels = cdp.consent_channels() %}

with

new_events as (

    select
        {{ cdp.event_anchor_type() }} as identifier_type,
        {{ cdp.event_anchor_value() }} as identifier_value,
        e.*
    from {{ ref('events') }} as e
    {% if is_incremental() -%}
    where e.bronze_loaded_at > {{ cdp.watermark('loaded_at') }}
    {%- endif %}

),

email_opt_outs as (

    select
        *,
        'email' as channel,
        'opted_out' as status,
        'legitimate_interest' as legal_basis,
        case when event_type = 'email_spamreport' then 'spam_report' else 'unsubscribed' end as reason
    from new_events
    where source = 'email'
        and event_type in ('email_unsubscribe', 'email_spamreport')

),

whatsapp_messages as (

    select
        e.*,
        {{ cdp.json_text('e.properties', 'is_opt_out_keyword') }} = 'true' or i.intent = 'opt_out' as is_opt_out,
        {{ cdp.json_text('e.properties', 'is_opt_in_keyword') }} = 'true' as is_opt_in
    from new_events as e
    left join {{ ref('whatsapp_message_insights') }} as i
        on i.message_id = e.event_id
    where e.source = 'whatsapp'

),

whatsapp_keywords as (

    select
        {{ cdp.star_except(['is_opt_out', 'is_opt_in']) }},
        'whatsapp' as channel,
        case when is_opt_out then 'opted_out' else 'opted_in' end as status,
        'consent' as legal_basis,
        case when is_opt_out then 'whatsapp_stop' else 'whatsapp_start' end as reason
    from whatsapp_messages
    where is_opt_out or is_opt_in

),

push_permissions as (

    select
        *,
        'push' as channel,
        'opted_in' as status,
        'consent' as legal_basis,
        'push_token_registered' as reason
    from new_events
    where source = 'app'
        and event_type = 'push_token_registered'

),

api_updates as (

    select
        *,
        {{ cdp.json_text('properties', 'channel') }} as channel,
        {{ cdp.json_text('properties', 'status') }} as status,
        'consent' as legal_basis,
        'api' as reason
    from new_events
    where event_type = 'consent_updated'

),

touched_contacts as (

    select distinct crm_id
    from new_events
    where source = 'salesforce'

),

crm_versions as (

    -- every version of the contacts that got a new one, with the opt-out flag before it
    select
        *,
        lag(has_opted_out) over (partition by crm_id order by occurred_at, event_id) as previous_has_opted_out
    from (
        select
            {{ cdp.event_anchor_type() }} as identifier_type,
            {{ cdp.event_anchor_value() }} as identifier_value,
            e.*,
            {{ cdp.try_cast(cdp.json_text('e.properties', 'has_opted_out_of_email'), 'boolean') }} as has_opted_out
        from {{ ref('events') }} as e
        where e.source = 'salesforce'
            and e.crm_id in (select crm_id from touched_contacts)
    ) as versions

),

crm_changes as (

    select
        {{ cdp.star_except(['has_opted_out', 'previous_has_opted_out']) }},
        'email' as channel,
        case when has_opted_out then 'opted_out' else 'opted_in' end as status,
        'consent' as legal_basis,
        case when has_opted_out then 'crm_opt_out' else 'crm_opt_in' end as reason
    from crm_versions
    where has_opted_out is not null
        and (
            (previous_has_opted_out is null and has_opted_out)
            or has_opted_out <> previous_has_opted_out
        )

),

statements as (

    {%- for relation in ['email_opt_outs', 'whatsapp_keywords', 'push_permissions', 'api_updates', 'crm_changes'] %}
    select
        identifier_type,
        identifier_value,
        channel,
        status,
        legal_basis,
        reason,
        occurred_at,
        source,
        event_id as source_event_id,
        record_key,
        bronze_loaded_at as loaded_at
    from {{ relation }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}

),

final as (

    select
        {{ cdp.md5_hex("source || '|' || source_event_id || '|' || channel") }} as consent_event_id,
        identifier_type,
        identifier_value,
        channel,
        status,
        legal_basis,
        reason,
        occurred_at,
        source,
        source_event_id,
        record_key,
        loaded_at
    from statements
    -- an event whose anchor is blocklisted still states consent for that identifier
    where identifier_value is not null
        and channel in ('{{ channels | join("', '") }}')
        and status in ('opted_in', 'opted_out')
        {% if is_incremental() -%}
        and not exists (
            select 1 from {{ this }} as l
            where l.consent_event_id = {{ cdp.md5_hex("statements.source || '|' || statements.source_event_id || '|' || statements.channel") }}
        )
        {%- endif %}

)

select * from final
