{#-
    Segment membership over time: one row per stay of a profile in a segment, from the entry to the
    exit (exited_at null while it lasts); a profile that leaves and comes back has two rows.
    Derived from the ledger gold.segment_changes, which survives full refreshes: an incremental run
    rewrites the stays of the (segment, profile) pairs that changed since the last run, and a full
    refresh (the nightly reconciliation) rebuilds every stay from the ledger, giving the same rows.
-#}
{{ config(
    materialized='incremental',
    unique_key='membership_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

with

changes as (

    select * from {{ ref('segment_changes') }}

),

{% if is_incremental() %}

changed_pairs as (

    select distinct segment, profile_id
    from changes
    where changed_at > {{ cdp.watermark('updated_at') }}

),

pair_changes as (

    select c.*
    from changes as c
    inner join changed_pairs as p
        on p.segment = c.segment
        and p.profile_id = c.profile_id

),

{% else %}

pair_changes as (

    select * from changes

),

{% endif %}

sequenced as (

    -- each enter is followed by its exit, if any (one change per pair and run)
    select
        change_id,
        profile_id,
        segment,
        change,
        score,
        changed_at,
        lead(change) over (partition by segment, profile_id order by changed_at) as next_change,
        lead(changed_at) over (partition by segment, profile_id order by changed_at) as next_changed_at
    from pair_changes

),

final as (

    select
        change_id as membership_id,
        profile_id,
        segment,
        changed_at as entered_at,
        case when next_change = 'exit' then next_changed_at end as exited_at,
        score as entry_score,
        coalesce(case when next_change = 'exit' then next_changed_at end, changed_at) as updated_at
    from sequenced
    where change = 'enter'

)

select * from final
