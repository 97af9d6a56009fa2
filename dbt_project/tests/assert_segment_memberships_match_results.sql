{#-
    After a build, the open memberships are exactly the current segment members, and a profile has at
    most one open stay per segment: the ledger and the memberships derived from it lost nothing.
-#}
with

open_memberships as (

    select segment, profile_id, count(*) as open_stays
    from {{ ref('segment_memberships') }}
    where exited_at is null
    group by segment, profile_id

),

results as (

    select distinct segment, profile_id from {{ ref('segment_results') }}

),

problems as (

    select o.segment, o.profile_id, 'open membership of a non-member' as problem
    from open_memberships as o
    left join results as r
        on r.segment = o.segment and r.profile_id = o.profile_id
    where r.profile_id is null

    union all

    select r.segment, r.profile_id, 'member without an open membership' as problem
    from results as r
    left join open_memberships as o
        on o.segment = r.segment and o.profile_id = r.profile_id
    where o.profile_id is null

    union all

    select segment, profile_id, 'more than one open membership' as problem
    from open_memberships
    where open_stays > 1

)

select * from problems
