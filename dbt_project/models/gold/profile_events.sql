{#-
    Every accepted event with the profile it belongs to (the profile of its anchor: its strongest
    identifier). A view: it costs nothing to build and always reflects the current stitching.
    profile_id is null only for an event whose anchor is blocklisted (test or system traffic).
-#}
{{ config(materialized='view') }}

with

events as (

    select
        *,
        {{ cdp.identifier_key(cdp.event_anchor_type(), cdp.event_anchor_value()) }} as anchor_key
    from {{ ref('events') }}

),

components as (

    select * from {{ ref('int_identity__components') }}

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

final as (

    select
        coalesce(m.profile_id, c.component_id) as profile_id,
        e.event_id,
        e.source,
        e.event_type,
        e.occurred_at,
        e.received_at,
        e.anchor_key,
        e.anonymous_id,
        e.session_id,
        e.device_id,
        e.email,
        e.phone,
        e.crm_id,
        e.user_id,
        e.properties,
        e.record_key
    from events as e
    left join components as c
        on c.identifier_key = e.anchor_key
    left join profile_map as m
        on m.component_id = c.component_id

)

select * from final
