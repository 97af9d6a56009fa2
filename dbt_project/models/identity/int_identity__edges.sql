{#-
    The identity graph's edges: two identifiers seen on the same record. Each record contributes a
    star from its anchor (its strongest identifier, by cdp__identity_type_priority) to each of its
    other identifiers, not every pair: the same components with fewer edges and a short diameter,
    which keeps connected components to a few rounds.
    Examples: a web form submit links the email to the browser's anonymous_id and the phone; an app
    login links the user_id to the device and the email; a CRM contact links its Id to its email
    and mobile; WhatsApp and email events carry one identifier and add nodes only.
    Incremental (append): an edge is stored once, with the batch that first showed it.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
) }}

with

new_events as (

    select
        *,
        {{ cdp.event_anchor_type() }} as anchor_type,
        {{ cdp.event_anchor_value() }} as anchor_value
    from {{ ref('events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('last_bronze_loaded_at') }}
    {%- endif %}

),

links as (

    {{ cdp.event_anchor_links('new_events') }}

),

per_batch as (

    -- one row per edge and landing batch, so that the first evidence below is deterministic
    select
        anchor_type,
        anchor_value,
        identifier_type,
        identifier_value,
        landed_at,
        min(source) as source,
        min(event_id) as event_id,
        max(bronze_loaded_at) as last_bronze_loaded_at
    from links
    group by anchor_type, anchor_value, identifier_type, identifier_value, landed_at

),

edges as (

    -- provenance: the batch that first showed the link and one of its records; an edge is stored
    -- once, so only values fixed by the first batch are kept (a later run must not change them)
    select
        {{ cdp.identifier_key('anchor_type', 'anchor_value') }} as identifier_key_a,
        {{ cdp.identifier_key('identifier_type', 'identifier_value') }} as identifier_key_b,
        anchor_type as identifier_type_a,
        identifier_type as identifier_type_b,
        min(landed_at) as first_landed_at,
        min_by(source, landed_at) as first_source,
        min_by(event_id, landed_at) as first_event_id,
        max(last_bronze_loaded_at) as last_bronze_loaded_at,
        {{ cdp.current_utc_timestamp() }} as loaded_at
    from per_batch
    group by anchor_type, anchor_value, identifier_type, identifier_value

)

select * from edges
{% if is_incremental() -%}
where not exists (
    select 1 from {{ this }} as old
    where old.identifier_key_a = edges.identifier_key_a
        and old.identifier_key_b = edges.identifier_key_b
)
{%- endif %}
