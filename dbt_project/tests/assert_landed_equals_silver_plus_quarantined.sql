{#- Nothing lost, nothing counted twice: per source, every landed record is either in silver or in quarantine. -#}
{{ config(meta={'gate': 2}) }}

select
    source,
    landed,
    silver,
    quarantined,
    landed - silver - quarantined as unaccounted
from {{ ref('source_reconciliation') }}
where landed <> silver + quarantined
    or not is_reconciled
