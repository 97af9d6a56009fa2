{#-
    Retired profile ids and the profile that holds their people now. A profile id is the birth id of
    its oldest identifier, so the survivor of a retired id is the current profile of the identifier
    that founded it; following it always lands on a live profile, however many merges happened since.
    merge_kind says how: 'deterministic' (an identifier now links the two) or 'probabilistic' (an
    auto-merged or approved match candidate).
-#}
with

retired as (

    select * from {{ ref('int_identity__profile_id_history') }}
    where retired_at is not null

),

founders as (

    select identifier_key, identifier_type, birth_profile_id, component_id
    from {{ ref('int_identity__components') }}

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

final as (

    select
        r.profile_id as retired_profile_id,
        coalesce(m.profile_id, f.component_id) as surviving_profile_id,
        case when f.component_id = r.profile_id then 'probabilistic' else 'deterministic' end
            as merge_kind,
        f.identifier_type as founding_identifier_type,
        r.first_published_at,
        r.retired_at
    from retired as r
    inner join founders as f
        on f.birth_profile_id = r.profile_id
    left join profile_map as m
        on m.component_id = f.component_id

)

select * from final
