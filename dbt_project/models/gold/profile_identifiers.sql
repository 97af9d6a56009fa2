{#-
    Every identifier of every profile, per source that saw it: the lookup index of the profile API.
    Incremental: rewrites the rows of identifiers seen again, of identifiers whose component was
    relabelled, and of identifiers in probabilistically merged components (or previously merged ones,
    so that an undone merge is undone here too); a blocklisted identifier's rows are removed.
-#}
{{ config(
    materialized='incremental',
    unique_key='identifier_source_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

{%- set components_relation = ref('int_identity__components') %}
{%- if execute and flags.WHICH in ('run', 'build') and is_incremental() %}
    {%- do run_query('delete from ' ~ this ~ ' where identifier_key in (select identifier_key from '
        ~ components_relation ~ ' where component_id is null)') %}
{%- endif %}

with

identifier_sources as (

    select * from {{ ref('int_identity__identifier_sources') }}

),

components as (

    select * from {{ components_relation }}
    where component_id is not null

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

{% if is_incremental() %}
{%- set since = cdp.watermark('updated_at') %}

affected as (

    select identifier_key from identifier_sources
    where updated_at > {{ since }}
    union distinct
    select identifier_key from components
    where updated_at > {{ since }}
    union distinct
    select c.identifier_key
    from components as c
    inner join profile_map as m
        on m.component_id = c.component_id
    union distinct
    select identifier_key from {{ this }}
    where component_id <> profile_id

),

{% endif %}

final as (

    select
        coalesce(m.profile_id, c.component_id) as profile_id,
        s.identifier_type,
        s.identifier_value,
        s.source,
        s.first_seen_at,
        s.last_seen_at,
        s.event_count,
        c.is_shared,
        s.identifier_key,
        s.identifier_source_key,
        c.component_id,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from identifier_sources as s
    inner join components as c
        on c.identifier_key = s.identifier_key
    left join profile_map as m
        on m.component_id = c.component_id
    {% if is_incremental() -%}
    where s.identifier_key in (select identifier_key from affected)
    {%- endif %}

)

select * from final
