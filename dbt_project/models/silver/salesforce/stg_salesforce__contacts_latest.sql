{#- The current version of each Salesforce Contact: the accepted version with the latest LastModifiedDate. -#}
{{ config(materialized='view') }}

with

versions as (

    select
        *,
        row_number() over (
            partition by contact_id
            order by last_modified_at desc, landed_at desc, record_key desc
        ) as version_rank
    from {{ ref('stg_salesforce__contacts') }}

),

latest as (

    select {{ cdp.star_except(['version_rank']) }}
    from versions
    where version_rank = 1

)

select * from latest
