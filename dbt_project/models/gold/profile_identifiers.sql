{#- Every identifier of every profile, per source that saw it: the lookup index of the profile API. -#}
with

identifier_sources as (

    select * from {{ ref('int_identity__identifier_sources') }}

),

components as (

    select * from {{ ref('int_identity__components') }}
    where component_id is not null

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

final as (

    select
        coalesce(m.profile_id, c.component_id) as profile_id,
        s.identifier_type,
        s.identifier_value,
        s.source,
        s.first_seen_at,
        s.last_seen_at,
        s.event_count,
        c.is_shared
    from identifier_sources as s
    inner join components as c
        on c.identifier_key = s.identifier_key
    left join profile_map as m
        on m.component_id = c.component_id

)

select * from final
