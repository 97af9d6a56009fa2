{#-
    The ledger of segment entries and exits: each run compares the current segment members
    (segment_results) with the memberships open after the previous runs and appends only the
    differences, so a sync downstream pushes changes, not whole segments.
    The open memberships are read from this table itself (a pair is open when it has one more enter
    than exits), so the ledger needs nothing but itself and the current results.
    It is history, not a function of the data: `dbt build --full-refresh` (the nightly reconciliation)
    leaves it alone (full_refresh: false). A segment whose file is removed or disabled has all its
    members exit on the next run.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    full_refresh=false,
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

with

current_members as (

    select segment, profile_id, score, as_of from {{ ref('segment_results') }}

),

open_members as (

    {% if is_incremental() -%}
    select
        segment,
        profile_id
    from {{ this }}
    group by segment, profile_id
    having sum(case when change = 'enter' then 1 else -1 end) > 0
    {%- else -%}
    -- the first run: nobody is a member yet
    select segment, profile_id from current_members
    where 1 = 0
    {%- endif %}

),

entries as (

    select
        c.segment,
        c.profile_id,
        'enter' as change,
        c.score
    from current_members as c
    left join open_members as o
        on o.segment = c.segment
        and o.profile_id = c.profile_id
    where o.profile_id is null

),

exits as (

    select
        o.segment,
        o.profile_id,
        'exit' as change,
        cast(null as {{ cdp.type_double() }}) as score
    from open_members as o
    left join current_members as c
        on c.segment = o.segment
        and c.profile_id = o.profile_id
    where c.profile_id is null

),

changes as (

    select * from entries
    union all
    select * from exits

),

final as (

    select
        {{ cdp.md5_hex("'" ~ invocation_id ~ "' || '|' || segment || '|' || profile_id || '|' || change") }} as change_id,
        profile_id,
        segment,
        change,
        score,
        {{ cdp.current_utc_timestamp() }} as changed_at,
        {{ cdp.as_of() }} as as_of,
        '{{ invocation_id }}' as run_id
    from changes

)

select * from final
