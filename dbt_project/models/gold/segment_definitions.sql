{#-
    The segments as data: one row per segment model (models/segments/) with its meta and current
    member count, read from dbt's graph, for the API and the CRM's picklists.
-#}
{{ config(materialized='table') }}

{%- set nodes = cdp.segment_nodes() %}

with

definitions as (

    {% for node in nodes -%}
    {%- set meta = cdp.segment_meta(node) -%}
    select
        '{{ meta.segment }}' as segment,
        '{{ meta.name | replace("'", "''") }}' as name,
        '{{ meta.description | replace("'", "''") }}' as description,
        '{{ meta.kind }}' as kind,
        '{{ meta.owner | replace("'", "''") }}' as owner,
        '{{ meta.destinations | join(",") }}' as destinations,
        '{{ node.original_file_path }}' as file_path
    {% if not loop.last %}union all
    {% endif -%}
    {%- else -%}
    select
        cast(null as {{ dbt.type_string() }}) as segment,
        cast(null as {{ dbt.type_string() }}) as name,
        cast(null as {{ dbt.type_string() }}) as description,
        cast(null as {{ dbt.type_string() }}) as kind,
        cast(null as {{ dbt.type_string() }}) as owner,
        cast(null as {{ dbt.type_string() }}) as destinations,
        cast(null as {{ dbt.type_string() }}) as file_path
    from (select 1 as one) as nothing
    where 1 = 0
    {%- endfor %}

),

member_counts as (

    select segment, count(*) as members
    from {{ ref('segment_results') }}
    group by segment

),

final as (

    select
        d.segment,
        d.name,
        d.description,
        d.kind,
        d.owner,
        d.destinations,
        d.file_path,
        coalesce(m.members, 0) as members
    from definitions as d
    left join member_counts as m
        on m.segment = d.segment

)

select * from final
