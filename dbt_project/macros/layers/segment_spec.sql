{#-
    Segment-spec messages in the web and app sources.

    The ingestion API (/v1/track, /v1/identify, /v1/page, /v1/screen, /v1/alias, /v1/group, /v1/batch)
    lands every Segment message as received, plus the server's `receivedAt`: into `app` when it is a
    screen or carries context.device.id, else into `web`. The web and app parsing models read both
    these messages and their native tracker's format; these macros hold what the two share.
    docs/sources.md ("Segment-spec messages") is the contract.

    A record is a Segment message when it has no native `event_id` but one of the Segment
    envelope's fields (messageId, anonymousId, userId, previousId, receivedAt): a native record
    that lost its event_id still fails as native ("missing required field event_id").
-#}

{#- The message types of the Segment spec and the event_type each becomes (track: see segment_event_type). -#}
{% macro segment_message_types() -%}
    {{ return({'page': 'page_view', 'screen': 'screen_view', 'identify': 'identify', 'alias': 'alias',
        'group': 'group', 'track': none}) }}
{%- endmacro %}

{#- The event types a Segment message can become beyond the tracked names a source knows. -#}
{% macro segment_event_types() -%}
    {{ return(['page_view', 'screen_view', 'identify', 'alias', 'group', 'custom_event']) }}
{%- endmacro %}


{#- The Segment fields both sources read (path -> kind, as select_payload_fields takes them). -#}
{% macro segment_payload_fields() -%}
    {{ return({
        'messageId': 'string', 'type': 'string', 'event': 'string', 'name': 'string',
        'anonymousId': 'string', 'userId': 'string', 'previousId': 'string', 'groupId': 'string',
        'timestamp': 'string', 'sentAt': 'string', 'receivedAt': 'string',
        'traits.email': 'string', 'traits.phone': 'string', 'traits.firstName': 'string',
        'traits.lastName': 'string', 'traits.first_name': 'string', 'traits.last_name': 'string',
        'traits.country': 'string', 'traits.address.country': 'string',
        'context.traits.email': 'string', 'context.traits.phone': 'string',
        'context.traits.address.country': 'string',
        'properties.email': 'string', 'properties.phone': 'string',
        'properties.channel': 'string', 'properties.status': 'string',
    }) }}
{%- endmacro %}


{#- Whether an extracted record (select_payload_fields) is a Segment message rather than a native event. -#}
{% macro segment_message_detected(native_id='payload__event_id') -%}
    ({{ native_id }} is null
        and coalesce(payload__messageid, payload__anonymousid, payload__userid, payload__previousid,
            payload__receivedat) is not null)
{%- endmacro %}


{#-
    A Segment message's event_type: page -> page_view, screen -> screen_view, identify, alias, group;
    a track becomes the source's own event type when its name, snake_cased ("Brochure Download" ->
    brochure_download), is one of `known_tracks` (snake name -> event type, so that Segment's
    "Object Actioned" names such as "Application Opened" map too), else custom_event with the name kept
    in event_name: arbitrary track names are valid Segment events, not unknown ones. Null for an
    unknown message type (quarantined).
-#}
{% macro segment_event_type(known_tracks) -%}
    {%- set snake = "trim(" ~ cdp.regex_replace_all("lower(trim(payload__event))", "[^a-z0-9]+", "_") ~ ", '_')" -%}
    case payload__type
        {%- for message_type, event_type in cdp.segment_message_types().items() if event_type %}
        when '{{ message_type }}' then '{{ event_type }}'
        {%- endfor %}
        when 'track' then
            case {{ snake }}
                {%- for name, event_type in known_tracks.items() %}
                when '{{ name }}' then '{{ event_type }}'
                {%- endfor %}
                else 'custom_event'
            end
    end
{%- endmacro %}


{#-
    The identifier fields of a Segment message: alias links `previousId` to `userId`, and previousId
    is taken as the anonymous id (what analytics.js and the mobile SDKs send by default); other
    messages carry anonymousId and/or userId.
-#}
{% macro segment_anonymous_id() -%}
    nullif(trim(coalesce(case when payload__type = 'alias' then payload__previousid end, payload__anonymousid)), '')
{%- endmacro %}

{#- An identity trait of a Segment message: traits (identify), else context.traits (any call), else properties. -#}
{% macro segment_trait(name) -%}
    coalesce(payload__traits__{{ name }}, payload__context__traits__{{ name }}, payload__properties__{{ name }})
{%- endmacro %}


{#-
    Why a Segment message is quarantined, checked in order like the native checks (null when it
    passes): missing messageId or type, an unknown type, missing ids (alias: userId and previousId;
    the others: userId or anonymousId), a track without event, a group without groupId, and neither
    timestamp nor receivedAt. A timestamp that does not parse is checked afterwards, as for native events.
-#}
{% macro segment_invalid_reason() -%}
    case
                when payload__messageid is null then 'missing required field messageId'
                when payload__type is null then 'missing required field type'
                when payload__type not in ('{{ cdp.segment_message_types().keys() | join("', '") }}')
                    then 'unknown Segment message type ' || {{ cdp.quoted_value('payload__type') }}
                when payload__type = 'alias' and payload__userid is null then 'missing required field userId'
                when payload__type = 'alias' and payload__previousid is null then 'missing required field previousId'
                when payload__type <> 'alias' and payload__userid is null and payload__anonymousid is null
                    then 'missing required field userId or anonymousId'
                when payload__type = 'track' and payload__event is null then 'missing required field event'
                when payload__type = 'group' and payload__groupid is null then 'missing required field groupId'
                when payload__timestamp is null and payload__receivedat is null
                    then 'missing required field timestamp'
            end
{%- endmacro %}


{#-
    The `segment` object of silver.events.properties: the message's type, its groupId (group), its
    previousId (alias) and its own properties whole; null for native events (one short key per row).
-#}
{% macro segment_event_properties(type_column) -%}
    case when message_format = 'segment' then {{ cdp.json_build_object([
        'type', type_column, 'group_id', 'group_id', 'previous_id', 'previous_id',
        'properties', 'segment_properties',
    ]) }} end
{%- endmacro %}


{#- `segment_expr` for a Segment message, `native_expr` for a native event (needs column message_format). -#}
{% macro by_format(segment_expr, native_expr) -%}
    case when message_format = 'segment' then {{ segment_expr }} else {{ native_expr }} end
{%- endmacro %}
