{#-
    Every profile id ever published, with when it was first published and when it was retired (it
    stopped being a profile id because its profile merged into an older one). It is history, not a
    function of the data: `dbt build --full-refresh` leaves it alone (full_refresh: false), so ids
    that channels and the CRM already hold keep resolving after a rebuild.
-#}
{{ config(
    materialized='incremental',
    unique_key='profile_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    full_refresh=false,
) }}

with

current_ids as (

    select profile_id from {{ ref('profiles') }}

),

{% if is_incremental() %}

history as (

    select * from {{ this }}

),

changes as (

    -- newly published ids
    select
        c.profile_id,
        {{ cdp.current_utc_timestamp() }} as first_published_at,
        cast(null as {{ cdp.type_utc_timestamp() }}) as retired_at
    from current_ids as c
    left join history as h
        on h.profile_id = c.profile_id
    where h.profile_id is null

    union all

    -- retired since the last run
    select
        h.profile_id,
        h.first_published_at,
        {{ cdp.current_utc_timestamp() }} as retired_at
    from history as h
    left join current_ids as c
        on c.profile_id = h.profile_id
    where h.retired_at is null and c.profile_id is null

    union all

    -- back in use (a merge was undone, e.g. a reviewer rejected a match)
    select
        h.profile_id,
        h.first_published_at,
        cast(null as {{ cdp.type_utc_timestamp() }}) as retired_at
    from history as h
    inner join current_ids as c
        on c.profile_id = h.profile_id
    where h.retired_at is not null

)

select * from changes

{% else %}

changes as (

    select
        profile_id,
        {{ cdp.current_utc_timestamp() }} as first_published_at,
        cast(null as {{ cdp.type_utc_timestamp() }}) as retired_at
    from current_ids

)

select * from changes

{% endif %}
