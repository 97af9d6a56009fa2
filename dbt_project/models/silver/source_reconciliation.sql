{#-
    Per source, what was landed and where it went: landed = silver + quarantined when nothing is lost
    or counted twice (the run summary prints this; a test fails when it does not hold). All five
    sources are always present, with zeros when nothing has landed.
-#}
{{ config(materialized='table') }}

{%- set sources = ['web', 'app', 'salesforce', 'email', 'whatsapp'] -%}
{%- set silver_models = {
    'web': 'stg_web__events', 'app': 'stg_app__events', 'salesforce': 'stg_salesforce__contacts',
    'email': 'stg_email__events', 'whatsapp': 'stg_whatsapp__messages',
} -%}

with

sources as (

    {% for source_name in sources -%}
    select '{{ source_name }}' as source{% if not loop.last %} union all{% endif %}
    {% endfor %}

),

landed as (

    {% for source_name in sources -%}
    select '{{ source_name }}' as source, count(*) as landed
    from {{ ref('brz_' ~ source_name ~ '__records') }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

accepted as (

    {% for source_name in sources -%}
    select '{{ source_name }}' as source, count(*) as silver
    from {{ ref(silver_models[source_name]) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

quarantined as (

    select
        source,
        count(*) as quarantined,
        sum(case when is_duplicate then 1 else 0 end) as duplicates
    from {{ ref('quarantine') }}
    group by source

),

counted as (

    select
        sources.source,
        coalesce(landed.landed, 0) as landed,
        coalesce(accepted.silver, 0) as silver,
        coalesce(quarantined.quarantined, 0) as quarantined,
        coalesce(quarantined.duplicates, 0) as duplicates
    from sources
    left join landed on landed.source = sources.source
    left join accepted on accepted.source = sources.source
    left join quarantined on quarantined.source = sources.source

),

reconciled as (

    select
        source,
        landed,
        silver,
        quarantined,
        duplicates,
        landed = silver + quarantined as is_reconciled
    from counted

)

select * from reconciled
