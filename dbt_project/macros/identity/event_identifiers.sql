{#-
    The identifiers an event carries. silver.events holds them in one column per type, named after
    the type (anonymous_id, device_id, email, phone, crm_id, user_id), already
    normalized (emails lower-cased, phones E.164). Sessions are not identifiers: a session lives inside
    one browser, so its anonymous_id says the same. For Salesforce, events.phone is the MobilePhone:
    the `Phone` field is often a landline or an office line that several people share.

    Everything here is computed row by row (no grouping or join per event): at 10M events that is the
    difference between seconds and minutes.
-#}

{#-
    The event's anchor: its strongest identifier (cdp__identity_type_priority). The event belongs to
    the anchor's profile, and its other identifiers are linked to the anchor. An event whose anchor is
    blocklisted (a form filled in with test@…) belongs to no profile: it is test or system traffic.
-#}
{% macro event_anchor_type() -%}
    case
        {%- for type in cdp.identity_type_priority() %}
        when {{ type }} is not null then '{{ type }}'
        {%- endfor %}
    end
{%- endmacro %}

{% macro event_anchor_value() -%}
    coalesce(
        {%- for type in cdp.identity_type_priority() %}
        {{ type }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}


{#- One row per (event, identifier): event columns plus identifier_type, identifier_value. -#}
{% macro event_identifier_rows(events) -%}
    {%- for type in cdp.identity_type_priority() %}
    select
        event_id,
        source,
        occurred_at,
        landed_at,
        bronze_loaded_at,
        '{{ type }}' as identifier_type,
        {{ type }} as identifier_value
    from {{ events }}
    where {{ type }} is not null
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{%- endmacro %}


{#-
    One row per link a record makes: from the record's anchor to each of its other identifiers
    (a star). `events` must have anchor_type and anchor_value columns.
-#}
{% macro event_anchor_links(events) -%}
    {%- for type in cdp.identity_type_priority() %}
    select
        anchor_type,
        anchor_value,
        '{{ type }}' as identifier_type,
        {{ type }} as identifier_value,
        event_id,
        source,
        landed_at,
        bronze_loaded_at
    from {{ events }}
    where {{ type }} is not null
        and anchor_type <> '{{ type }}'
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{%- endmacro %}


{#- '<type>:<value>', the key of an identifier everywhere in identity and gold. -#}
{% macro identifier_key(type_expr, value_expr) -%}
    {{ type_expr }} || ':' || {{ value_expr }}
{%- endmacro %}
