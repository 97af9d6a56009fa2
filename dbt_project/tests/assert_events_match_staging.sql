{#- The unified events hold every accepted staging row once, per source, and nothing else. -#}
{{ config(meta={'gate': 2, 'dagster': {'ref': {'name': 'events'}}}) }}

{%- set silver_models = {
    'web': 'stg_web__events', 'app': 'stg_app__events', 'salesforce': 'stg_salesforce__contacts',
    'email': 'stg_email__events', 'whatsapp': 'stg_whatsapp__messages',
} -%}

with

staged as (

    {% for source_name, model_name in silver_models.items() -%}
    select '{{ source_name }}' as source, count(*) as staged from {{ ref(model_name) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

unified as (

    select source, count(*) as unified
    from {{ ref('events') }}
    group by source

)

select
    staged.source,
    staged.staged,
    coalesce(unified.unified, 0) as unified
from staged
left join unified on unified.source = staged.source
where staged.staged <> coalesce(unified.unified, 0)
