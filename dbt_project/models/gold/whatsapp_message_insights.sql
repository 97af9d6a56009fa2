{#-
    What each inbound WhatsApp message is about, without its text: intent, program and sentiment, found
    by rule tables that analysts edit as seeds (whatsapp_intent_rules, program_entities,
    sentiment_lexicon; every pattern is RE2, matched case-insensitively anywhere in the message).
    - intent: the matching rule of highest priority, 'other' when none matches; `intents` lists every
      matching intent, highest priority first (a comma-separated text: portable, and easy to filter
      with like '%complaint%').
    - sentiment_score: the sum of the lexicon weights of the terms found, a term preceded by a negation
      (not, never, nicht, kein...) within two words counting -0.75 times its weight, one preceded by an
      intensifier (very, really, sehr...) 1.5 times, clamped to [-1, 1].
    The body stays in silver (stg_whatsapp__messages): this table holds no text, only what was derived.
    The rules are inlined as constants when the model runs (macros/rules/rule_tables.sql): a pattern
    read from a column would be compiled again for every message.
    Incremental: new messages (bronze_loaded_at), and earlier messages whose sender's phone now belongs
    to another profile (a merge, or merge protection cutting the phone out), re-anchored like
    gold.profile_events.
-#}
{{ config(
    materialized='incremental',
    unique_key='message_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

{#- a term's edges: not inside a word. Letters are spelled out: Unicode classes (\pL) cost ~30 ms
    of regex compilation per pattern, the whole lexicon seconds per run. -#}
{%- set letter = 'a-zßàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ' -%}
{%- set term_start = '(^|[^' ~ letter ~ '])(' -%}
{%- set term_end = ')([^' ~ letter ~ ']|$)' -%}
{%- set negation = '(^|[^' ~ letter ~ '])(not|no|never|nothing|nicht|nie|kein[' ~ letter ~ ']*|[' ~ letter ~ ']n.t)[^'
    ~ letter ~ ']+([' ~ letter ~ ']+[^' ~ letter ~ ']+)?(' -%}
{%- set intensifier = '(^|[^' ~ letter ~ '])(very|really|so|extremely|totally|sehr|wirklich|total|echt)[^'
    ~ letter ~ ']+(' -%}

-- depends_on: {{ ref('whatsapp_intent_rules') }}
-- depends_on: {{ ref('program_entities') }}
-- depends_on: {{ ref('sentiment_lexicon') }}
{%- set intent_rules = cdp.rule_table_rows('whatsapp_intent_rules', 'priority desc, intent, pattern') %}
{%- set program_entities = cdp.rule_table_rows('program_entities', 'priority desc, entity') %}
{%- set sentiment_lexicon = cdp.rule_table_rows('sentiment_lexicon', 'term') %}

with

staged as (

    select * from {{ ref('stg_whatsapp__messages') }}

),

components as (

    select * from {{ ref('int_identity__components') }}

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

{% if is_incremental() %}

reanchored as (

    -- earlier messages whose phone's profile is no longer the one stored
    select i.message_id
    from {{ this }} as i
    inner join staged as s
        on s.message_id = i.message_id
    left join components as c
        on c.identifier_key = {{ cdp.identifier_key("'phone'", 's.phone') }}
    left join profile_map as m
        on m.component_id = c.component_id
    where coalesce(m.profile_id, c.component_id) is distinct from i.profile_id

),

{% endif %}

messages as (

    select
        message_id,
        phone,
        body,
        received_at,
        bronze_loaded_at
    from staged
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
        or message_id in (select message_id from reanchored)
    {%- endif %}

),

rule_matches as (

    -- one scan of the messages per rule, its pattern a constant
    {%- for rule in intent_rules %}
    select message_id, '{{ rule.intent }}' as intent, {{ rule.priority }} as priority
    from messages
    where {{ cdp.regex_contains_ignore_case('body', cdp.regex_literal(rule.pattern)) }}
    union all
    {%- endfor %}
    select message_id, 'other' as intent, -1 as priority from messages where false

),

matched_intents as (

    -- one row per message and matching intent (an intent may have several rules)
    select
        message_id,
        intent,
        max(priority) as priority
    from rule_matches
    group by message_id, intent

),

intents as (

    select
        message_id,
        max(case when intent_rank = 1 then intent end) as intent,
        string_agg(intent, ',' order by priority desc, intent) as intents
    from (
        select
            *,
            row_number() over (partition by message_id order by priority desc, intent) as intent_rank
        from matched_intents
    ) as ranked
    group by message_id

),

entities as (

    -- the first matching entity, in the seed's priority order
    select
        message_id,
        case
            {%- for entity in program_entities %}
            when {{ cdp.regex_contains_ignore_case('body', cdp.regex_literal(entity.pattern)) }} then '{{ entity.entity }}'
            {%- endfor %}
        end as program_entity
    from messages

),

lexicon_hits as (

    -- one scan per term; a negation or an intensifier is looked for only where the term is found
    {%- for entry in sentiment_lexicon %}
    select
        message_id,
        {{ entry.weight }} * case
            when {{ cdp.regex_contains_ignore_case('body', cdp.regex_literal(negation ~ entry.term ~ term_end)) }} then -0.75
            when {{ cdp.regex_contains_ignore_case('body', cdp.regex_literal(intensifier ~ entry.term ~ term_end)) }} then 1.5
            else 1.0
        end as weight
    from messages
    where {{ cdp.regex_contains_ignore_case('body', cdp.regex_literal(term_start ~ entry.term ~ term_end)) }}
    union all
    {%- endfor %}
    select message_id, 0.0 as weight from messages where false

),

sentiment as (

    select
        message_id,
        greatest(-1.0, least(1.0, sum(weight))) as sentiment_score
    from lexicon_hits
    group by message_id

),

final as (

    select
        -- ids
        m.message_id,
        coalesce(pm.profile_id, c.component_id) as profile_id,

        -- what the message is about
        coalesce(i.intent, 'other') as intent,
        coalesce(i.intents, 'other') as intents,
        e.program_entity,
        round({{ cdp.try_cast('coalesce(s.sentiment_score, 0)', 'double') }}, 3) as sentiment_score,
        case
            when s.sentiment_score <= -0.2 then 'negative'
            when s.sentiment_score >= 0.2 then 'positive'
            else 'neutral'
        end as sentiment_label,

        -- timestamps
        m.received_at,
        m.bronze_loaded_at,
        {{ cdp.current_utc_timestamp() }} as updated_at

    from messages as m
    left join components as c
        on c.identifier_key = {{ cdp.identifier_key("'phone'", 'm.phone') }}
    left join profile_map as pm
        on pm.component_id = c.component_id
    left join intents as i
        on i.message_id = m.message_id
    left join entities as e
        on e.message_id = m.message_id
    left join sentiment as s
        on s.message_id = m.message_id

)

select * from final
