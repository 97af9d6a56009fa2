{#-
    The identity graph's nodes: one row per identifier, with the merge-protection verdicts.
    - blocklisted (seed identity_blocklist): placeholder and system values (test@, noreply@, reserved
      domains, 0000000 phones). They join no profile and link nothing.
    - shared: an identifier linked to more distinct identifiers of one type than one person may have
      (var cdp__identity_max_per_profile), e.g. a family tablet on which four students log in with
      their own accounts. All its links are cut (int_identity__cut_edges says which and why) and it
      stays a profile of its own, so the students are not fused into one person.
    Incremental: only identifiers seen again or touched by a new edge get new verdicts (an
    identifier's degree changes only through a new edge). After editing the blocklist seed, run
    `dbt build --full-refresh -s path:dbt_project/models/identity path:dbt_project/models/gold`.
-#}
{{ config(
    materialized='incremental',
    unique_key='identifier_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
) }}
-- depends_on: {{ ref('identity_blocklist') }}

{%- set limits = cdp.identity_max_per_profile() %}
{%- set blocklist = [] %}
{%- if execute %}
    {%- for row in run_query('select identifier_type, pattern, reason from ' ~ ref('identity_blocklist')
        ~ ' order by identifier_type, pattern') %}
        {%- do blocklist.append([row[0], row[1], row[2]]) %}
    {%- endfor %}
{%- endif %}

with

{% if is_incremental() %}
{%- set since = cdp.watermark('updated_at') %}

touched as (

    select identifier_key from {{ ref('int_identity__identifier_sources') }}
    where updated_at > {{ since }}
    union distinct
    select identifier_key_a as identifier_key from {{ ref('int_identity__edges') }}
    where loaded_at > {{ since }}
    union distinct
    select identifier_key_b as identifier_key from {{ ref('int_identity__edges') }}
    where loaded_at > {{ since }}

),

{% endif %}

identifiers as (

    select
        identifier_key,
        identifier_type,
        identifier_value,
        min(first_landed_at) as first_landed_at
    from {{ ref('int_identity__identifier_sources') }}
    {% if is_incremental() -%}
    where identifier_key in (select identifier_key from touched)
    {%- endif %}
    group by identifier_key, identifier_type, identifier_value

),

blocked as (

    -- the seed's patterns are inlined as constants: a regex taken from a column would be compiled
    -- again for every row (minutes at millions of identifiers instead of a second)
    select identifier_key, blocked_reason
    from (
        select
            identifier_key,
            {%- if blocklist | length > 0 %}
            case
                {%- for rule in blocklist %}
                when identifier_type = '{{ rule[0] }}' and {{ cdp.regex_full_match('identifier_value', rule[1] | replace("'", "''")) }}
                    then '{{ rule[2] | replace("'", "''") }}'
                {%- endfor %}
            end as blocked_reason
            {%- else %}
            cast(null as {{ dbt.type_string() }}) as blocked_reason
            {%- endif %}
        from identifiers
    ) as checked
    where blocked_reason is not null

),

scope_edges as (

    -- the edges of the identifiers being (re)judged, from either end
    select e.identifier_key_a as identifier_key, e.identifier_key_b as neighbour_key, e.identifier_type_b as neighbour_type
    from {{ ref('int_identity__edges') }} as e
    inner join identifiers as i
        on i.identifier_key = e.identifier_key_a
    union all
    select e.identifier_key_b as identifier_key, e.identifier_key_a as neighbour_key, e.identifier_type_a as neighbour_type
    from {{ ref('int_identity__edges') }} as e
    inner join identifiers as i
        on i.identifier_key = e.identifier_key_b

),

all_blocked as (

    -- blocked endpoints: the verdicts of this run, and the stored ones of the identifiers not rejudged
    select identifier_key from blocked
    {% if is_incremental() -%}
    union all
    select identifier_key from {{ this }}
    where is_blocked and identifier_key not in (select identifier_key from touched)
    {%- endif %}

),

neighbours as (

    -- a link to or from a blocklisted identifier does not count
    select n.*
    from scope_edges as n
    where not exists (select 1 from all_blocked as b where b.identifier_key = n.identifier_key)
        and not exists (select 1 from all_blocked as b where b.identifier_key = n.neighbour_key)

),

degrees as (

    select
        identifier_key,
        neighbour_type,
        count(distinct neighbour_key) as neighbour_count
    from neighbours
    group by identifier_key, neighbour_type

),

over_limit as (

    select
        identifier_key,
        neighbour_type,
        neighbour_count,
        {{ cdp.identity_case('neighbour_type', limits) }} as max_per_profile
    from degrees
    where neighbour_count > {{ cdp.identity_case('neighbour_type', limits) }}

),

shared as (

    select
        identifier_key,
        min(
            'linked to ' || cast(neighbour_count as {{ dbt.type_string() }}) || ' ' || neighbour_type
            || ' identifiers (at most ' || cast(max_per_profile as {{ dbt.type_string() }}) || ' per profile)'
        ) as shared_reason
    from over_limit
    group by identifier_key

),

final as (

    select
        i.identifier_key,
        i.identifier_type,
        i.identifier_value,
        {{ cdp.identity_birth_profile_id('i.identifier_key') }} as birth_profile_id,
        i.first_landed_at,
        b.identifier_key is not null as is_blocked,
        b.blocked_reason,
        s.identifier_key is not null as is_shared,
        s.shared_reason,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from identifiers as i
    left join blocked as b
        on b.identifier_key = i.identifier_key
    left join shared as s
        on s.identifier_key = i.identifier_key

)

select * from final
