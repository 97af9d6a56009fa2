{#- The links merge protection cut, and why: every edge touching a blocklisted or shared identifier. -#}
{{ config(materialized='view') }}

with

edges as (

    select * from {{ ref('int_identity__edges') }}

),

nodes as (

    select * from {{ ref('int_identity__nodes') }}

),

cut as (

    select
        e.identifier_key_a,
        e.identifier_key_b,
        e.first_landed_at,
        e.first_source,
        e.first_event_id,
        case
            when a.is_blocked then 'blocklisted ' || a.identifier_type || ': ' || a.blocked_reason
            when b.is_blocked then 'blocklisted ' || b.identifier_type || ': ' || b.blocked_reason
            when a.is_shared then 'shared ' || a.identifier_type || ': ' || a.shared_reason
            else 'shared ' || b.identifier_type || ': ' || b.shared_reason
        end as cut_reason
    from edges as e
    inner join nodes as a
        on a.identifier_key = e.identifier_key_a
    inner join nodes as b
        on b.identifier_key = e.identifier_key_b
    where a.is_blocked or b.is_blocked or a.is_shared or b.is_shared

)

select * from cut
