{#-
    Deterministic stitching: every identifier with the component (the person) it belongs to.

    A component's id is the birth id of its oldest identifier (first landed, ties broken by the id),
    so it is a pure function of the data: it does not change while new data only adds to a profile,
    it is the older profile's id that survives when two profiles merge, and a full refresh gives the
    same ids as any sequence of incremental runs.

    Incremental: only the components touched since the last run are relabelled, i.e. those holding
    an endpoint of a new edge, a new identifier, or an identifier whose merge-protection verdict
    changed. Their old members and the new nodes are relabelled together (components are closed
    under edges, so no other component can be affected) and replace their rows.
    Blocklisted identifiers are kept with a null component_id.
-#}
{{ config(
    materialized='incremental',
    unique_key='identifier_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    post_hook="{{ cdp.drop_components_work(this) }}",
) }}

{%- set work_nodes = cdp.cc_work(this, 'nodes') -%}
{%- set work_seeds = cdp.cc_work(this, 'seeds') -%}
{%- set nodes = ref('int_identity__nodes') -%}
{%- set edges = ref('int_identity__edges') -%}

{%- if execute and flags.WHICH in ('run', 'build') -%}
    {%- if is_incremental() -%}
        {#- the nodes whose component may have changed since the last run -#}
        {%- do run_query('create or replace table ' ~ work_seeds ~ ' as
            select identifier_key_a as identifier_key from ' ~ edges ~ '
            where loaded_at > (select max(edges_loaded_through) from ' ~ this ~ ')
            union distinct
            select identifier_key_b as identifier_key from ' ~ edges ~ '
            where loaded_at > (select max(edges_loaded_through) from ' ~ this ~ ')
            union distinct
            select n.identifier_key from ' ~ nodes ~ ' as n
            left join ' ~ this ~ ' as c on c.identifier_key = n.identifier_key
            where n.updated_at > (select max(updated_at) from ' ~ this ~ ')
                and (c.identifier_key is null or c.is_shared <> n.is_shared or c.is_blocked <> n.is_blocked)') -%}
        {%- do run_query('create or replace table ' ~ work_nodes ~ ' as
            with affected as (
                select identifier_key from ' ~ work_seeds ~ '
                union distinct
                select c.identifier_key from ' ~ this ~ ' as c
                where c.component_id in (
                    select old.component_id from ' ~ this ~ ' as old
                    inner join ' ~ work_seeds ~ ' as s on s.identifier_key = old.identifier_key
                )
            )
            select n.*, row_number() over (order by n.first_landed_at, n.birth_profile_id) as node
            from ' ~ nodes ~ ' as n
            inner join affected as a on a.identifier_key = n.identifier_key') -%}
    {%- else -%}
        {%- do run_query('create or replace table ' ~ work_nodes ~ ' as
            select n.*, row_number() over (order by n.first_landed_at, n.birth_profile_id) as node
            from ' ~ nodes ~ ' as n') -%}
    {%- endif -%}
{%- endif -%}

{%- set labels = cdp.connected_components(
    edges_sql='select a.node as src, b.node as dst from ' ~ edges ~ ' as e
        inner join ' ~ work_nodes ~ ' as a on a.identifier_key = e.identifier_key_a
        inner join ' ~ work_nodes ~ ' as b on b.identifier_key = e.identifier_key_b
        where not (a.is_blocked or b.is_blocked or a.is_shared or b.is_shared)',
    base=this,
) %}

with

relabelled as (

    select * from {{ work_nodes }}

),

labels as (

    select * from {{ labels }}

),

final as (

    select
        n.identifier_key,
        n.identifier_type,
        n.identifier_value,
        -- an identifier without live links is a profile of its own
        case when not n.is_blocked then coalesce(root.birth_profile_id, n.birth_profile_id) end as component_id,
        n.birth_profile_id,
        n.first_landed_at,
        n.is_blocked,
        n.is_shared,
        (select max(loaded_at) from {{ edges }}) as edges_loaded_through,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from relabelled as n
    left join labels as l
        on l.node = n.node
    left join relabelled as root
        on root.node = l.label

)

select * from final
