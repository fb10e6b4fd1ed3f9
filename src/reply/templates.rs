//! Reply templates: every part from the config compiled into one minijinja environment,
//! checked at startup (syntax, unknown variables, rendering with and without the optional
//! slots, coverage of strategies × intents × channels), and looked up most specific first:
//! tenant+channel, tenant, channel, language default.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::channel::ChannelKind;
use super::config::{LanguageTemplates, PartSet, RawConfig, ReplyConfigError};
use super::slots::{SLOT_NAMES, Slots};
use super::text::{contains_placeholder, squash_whitespace};

/// The scope of templates shared by every tenant.
const SHARED_SCOPE: &str = "default";
/// The channel key whose parts every channel inherits.
const ANY_CHANNEL: &str = "default";
/// minijinja's global functions, which static analysis reports as undeclared variables.
const GLOBALS: [&str; 8] = [
    "range",
    "dict",
    "namespace",
    "debug",
    "cycler",
    "joiner",
    "lipsum",
    "loop",
];

/// One piece of a reply, by what it is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    Greeting,
    Subject,
    SignOff,
    PrivateInvite,
    Opening(&'a str),
    Closing(&'a str),
    Body(&'a str),
}

impl Part<'_> {
    fn key(&self) -> String {
        match self {
            Part::Greeting => "greeting".into(),
            Part::Subject => "subject".into(),
            Part::SignOff => "sign_off".into(),
            Part::PrivateInvite => "private_invite".into(),
            Part::Opening(strategy) => format!("opening.{strategy}"),
            Part::Closing(strategy) => format!("closing.{strategy}"),
            Part::Body(intent) => format!("body.{intent}"),
        }
    }
}

/// Where a reply is being drafted: selects the template chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub tenant: Option<&'a str>,
    pub language: &'a str,
    pub kind: ChannelKind,
}

/// A rendered part and whether a tenant's own template produced it.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub text: String,
    pub from_tenant: bool,
}

pub(crate) struct TemplateStore {
    env: Environment<'static>,
    /// Plain-text parts (the signature), by the same ids as templates.
    plain: HashMap<String, String>,
    languages: BTreeSet<String>,
    tenants: BTreeSet<String>,
    missing: Vec<MissingTemplate>,
}

/// A strategy or intent part (`opening.de_escalate`, `body.refund`) that a language lacks on
/// some channels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MissingTemplate {
    pub language: String,
    pub part: String,
    pub channels: Vec<&'static str>,
}

fn template_id(scope: &str, language: &str, channel: &str, key: &str) -> String {
    format!("{scope}/{language}/{channel}/{key}")
}

/// An environment where a typo in a variable name is an error and printing a slot that is
/// absent is an error too, so that "Hi none," can never be drafted: templates must guard
/// optional slots with `{% if customer_name %}`.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "printed a missing slot; guard it with {% if slot %}...{% endif %}",
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

impl TemplateStore {
    /// Compiles and checks every template; expects `raw.validate()` to have passed.
    pub(crate) fn build(raw: &RawConfig) -> Result<TemplateStore, ReplyConfigError> {
        let mut store = TemplateStore {
            env: environment(),
            plain: HashMap::new(),
            languages: raw.templates.keys().cloned().collect(),
            tenants: raw.tenants.keys().cloned().collect(),
            missing: Vec::new(),
        };
        let scopes = std::iter::once((SHARED_SCOPE, &raw.templates)).chain(
            raw.tenants
                .iter()
                .map(|(tenant, config)| (tenant.as_str(), &config.templates)),
        );
        for (scope, languages) in scopes {
            store.add_scope(scope, languages, raw)?;
        }
        store.missing = store.check_coverage(raw)?;
        for gap in &store.missing {
            tracing::warn!(
                language = gap.language.as_str(),
                part = gap.part.as_str(),
                channels = gap.channels.join(",").as_str(),
                default_strategy = raw.strategies.default.as_str(),
                default_intent = raw.intents.default.as_str(),
                "reply template missing; drafts use the default strategy's or intent's template"
            );
        }
        Ok(store)
    }

    pub(crate) fn languages(&self) -> &BTreeSet<String> {
        &self.languages
    }

    fn add_scope(
        &mut self,
        scope: &str,
        languages: &BTreeMap<String, LanguageTemplates>,
        raw: &RawConfig,
    ) -> Result<(), ReplyConfigError> {
        for (language, channels) in languages {
            for (channel, parts) in channels {
                if let Some(signature) = &parts.signature {
                    let id = template_id(scope, language, channel, "signature");
                    if contains_placeholder(signature) {
                        return Err(ReplyConfigError::SyntaxInPlainText { id });
                    }
                    self.plain.insert(id, squash_whitespace(signature));
                }
                for (key, source, strategy, intent) in part_sources(parts, raw) {
                    let id = template_id(scope, language, channel, &key);
                    self.env
                        .add_template_owned(id.clone(), source.to_string())
                        .map_err(|source| ReplyConfigError::Template {
                            id: id.clone(),
                            source,
                        })?;
                    self.check_template(&id, language, channel, strategy, intent)?;
                }
            }
        }
        Ok(())
    }

    /// Unknown variables are found statically (also in branches a sample would not take);
    /// then the template must render, without leaking template syntax, both with every slot
    /// filled and with every optional slot missing.
    fn check_template(
        &self,
        id: &str,
        language: &str,
        channel: &str,
        strategy: &str,
        intent: &str,
    ) -> Result<(), ReplyConfigError> {
        let template = self
            .env
            .get_template(id)
            .expect("template was added just before: bug");
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !SLOT_NAMES.contains(&v.as_str()) && !GLOBALS.contains(&v.as_str()))
            .collect();
        unknown.sort();
        if let Some(variable) = unknown.into_iter().next() {
            return Err(ReplyConfigError::UnknownVariable {
                id: id.to_string(),
                variable,
                known: SLOT_NAMES.join(", "),
            });
        }
        let channel = if channel == ANY_CHANNEL {
            "chat"
        } else {
            channel
        };
        let full = Slots {
            customer_name: Some("Alex Example"),
            order_id: Some("A12345"),
            subject: Some("Sample subject"),
            signature: "Support Team",
            channel,
            language,
            emotion: "neutral",
            strategy,
            intent,
        };
        let empty = Slots {
            customer_name: None,
            order_id: None,
            subject: None,
            ..full.clone()
        };
        for (case, slots) in [
            ("with every slot filled", &full),
            ("with no customer_name, order_id or subject", &empty),
        ] {
            let text = template
                .render(slots)
                .map_err(|source| ReplyConfigError::Render {
                    id: id.to_string(),
                    case,
                    source,
                })?;
            if contains_placeholder(&text) {
                return Err(ReplyConfigError::PlaceholderLeak {
                    id: id.to_string(),
                    case,
                });
            }
        }
        Ok(())
    }

    /// Strategy and intent templates that some language and channel lack (drafts fall back
    /// to the default strategy's or intent's template there).
    #[cfg(test)]
    pub(crate) fn missing(&self) -> &[MissingTemplate] {
        &self.missing
    }

    /// Required parts are errors when missing; strategies and intents without templates are
    /// returned, to be warned about once at startup.
    fn check_coverage(&self, raw: &RawConfig) -> Result<Vec<MissingTemplate>, ReplyConfigError> {
        let default_strategy = raw.strategies.default.as_str();
        let default_intent = raw.intents.default.as_str();
        let strategies = raw.referenced_strategies();
        let intents = raw.referenced_intents();
        let mut missing: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
        for language in &self.languages {
            for kind in ChannelKind::ALL {
                let at = Lookup {
                    tenant: None,
                    language,
                    kind,
                };
                let mut required = vec![
                    Part::Opening(default_strategy),
                    Part::Closing(default_strategy),
                    Part::Body(default_intent),
                ];
                match kind {
                    ChannelKind::Email => {
                        required.extend([Part::Greeting, Part::Subject, Part::SignOff])
                    }
                    ChannelKind::Social => required.push(Part::PrivateInvite),
                    _ => required.push(Part::Greeting),
                }
                if let Some(part) = required.into_iter().find(|part| !self.has(&at, *part)) {
                    return Err(ReplyConfigError::MissingRequired {
                        language: language.clone(),
                        channel: kind.as_str(),
                        part: part.key(),
                    });
                }
                if kind == ChannelKind::Email && self.plain_text(&at, "signature").is_none() {
                    return Err(ReplyConfigError::MissingRequired {
                        language: language.clone(),
                        channel: kind.as_str(),
                        part: "signature".into(),
                    });
                }
                let wanted = strategies
                    .iter()
                    .flat_map(|s| [Part::Opening(s), Part::Closing(s)])
                    .chain(intents.iter().map(|i| Part::Body(i)));
                for part in wanted.filter(|part| !self.has(&at, *part)) {
                    missing
                        .entry((language.clone(), part.key()))
                        .or_default()
                        .push(kind.as_str());
                }
            }
        }
        Ok(missing
            .into_iter()
            .map(|((language, part), channels)| MissingTemplate {
                language,
                part,
                channels,
            })
            .collect())
    }

    /// Template ids to try, most specific first: the tenant's (when it has templates) for
    /// this channel and for any channel, then the shared ones likewise.
    fn chain(&self, at: &Lookup, key: &str) -> Vec<(bool, String)> {
        let tenant = at.tenant.filter(|t| self.tenants.contains(*t));
        let scopes = tenant
            .map(|t| (true, t))
            .into_iter()
            .chain([(false, SHARED_SCOPE)]);
        scopes
            .flat_map(|(from_tenant, scope)| {
                [at.kind.as_str(), ANY_CHANNEL]
                    .map(|channel| (from_tenant, template_id(scope, at.language, channel, key)))
            })
            .collect()
    }

    pub(crate) fn has(&self, at: &Lookup, part: Part) -> bool {
        self.chain(at, &part.key())
            .iter()
            .any(|(_, id)| self.env.get_template(id).is_ok())
    }

    /// The first template in the chain that renders without leaking template syntax, as one
    /// line; `None` when none does.
    pub(crate) fn render(&self, at: &Lookup, part: Part, slots: &Slots) -> Option<Rendered> {
        self.chain(at, &part.key())
            .into_iter()
            .find_map(|(from_tenant, id)| {
                let text = self.env.get_template(&id).ok()?.render(slots).ok()?;
                let text = squash_whitespace(&text);
                (!contains_placeholder(&text)).then_some(Rendered { text, from_tenant })
            })
    }

    /// A plain-text part (the signature) by the same chain.
    pub(crate) fn plain_text(&self, at: &Lookup, key: &str) -> Option<(&str, bool)> {
        self.chain(at, key)
            .into_iter()
            .find_map(|(from_tenant, id)| Some((self.plain.get(&id)?.as_str(), from_tenant)))
    }
}

/// (key, source, strategy, intent) of every template in a part set; strategy and intent are
/// the sample values used when checking the template.
fn part_sources<'a>(
    parts: &'a PartSet,
    raw: &'a RawConfig,
) -> Vec<(String, &'a str, &'a str, &'a str)> {
    let strategy = raw.strategies.default.as_str();
    let intent = raw.intents.default.as_str();
    let mut sources: Vec<(String, &str, &str, &str)> = [
        (Part::Greeting, &parts.greeting),
        (Part::Subject, &parts.subject),
        (Part::SignOff, &parts.sign_off),
        (Part::PrivateInvite, &parts.private_invite),
    ]
    .into_iter()
    .filter_map(|(part, source)| Some((part.key(), source.as_deref()?, strategy, intent)))
    .collect();
    for (name, source) in &parts.opening {
        sources.push((Part::Opening(name).key(), source, name, intent));
    }
    for (name, source) in &parts.closing {
        sources.push((Part::Closing(name).key(), source, name, intent));
    }
    for (name, source) in &parts.body {
        sources.push((Part::Body(name).key(), source, strategy, name));
    }
    sources
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid config, with `extra` appended to the `en: default:` part set.
    pub(crate) fn config(extra: &str) -> String {
        format!(
            r#"
default_language: en
strategies:
  by_emotion: {{anger: de_escalate}}
  default: answer_directly
  escalation: de_escalate
intents:
  default: general
  rules:
    - intent: refund
      keywords: {{en: [refund]}}
templates:
  en:
    default:
      greeting: "{{% if customer_name %}}Hi {{{{ customer_name }}}},{{% else %}}Hello,{{% endif %}}"
      subject: "Re: {{% if subject %}}{{{{ subject }}}}{{% else %}}Your message{{% endif %}}"
      sign_off: "Regards,"
      signature: "Support"
      private_invite: "Please DM us."
      opening: {{answer_directly: "Thanks for writing."}}
      closing: {{answer_directly: "Anything else?"}}
      body:
        general: "We will get back to you."
{extra}
"#
        )
    }

    fn build(yaml: &str) -> Result<TemplateStore, ReplyConfigError> {
        let raw = RawConfig::parse(yaml, "test").expect("test yaml parses");
        raw.validate()?;
        TemplateStore::build(&raw)
    }

    fn slots<'a>() -> Slots<'a> {
        Slots {
            customer_name: None,
            order_id: None,
            subject: None,
            signature: "Support",
            channel: "chat",
            language: "en",
            emotion: "neutral",
            strategy: "answer_directly",
            intent: "general",
        }
    }

    #[test]
    fn minimal_config_builds_with_missing_strategies_only_warned() {
        // de_escalate and refund have no templates: a warning, not an error.
        let store = build(&config("")).expect("valid");
        let parts: Vec<&str> = store.missing().iter().map(|m| m.part.as_str()).collect();
        assert_eq!(
            parts,
            ["body.refund", "closing.de_escalate", "opening.de_escalate"]
        );
        assert_eq!(store.missing()[0].channels.len(), ChannelKind::ALL.len());
    }

    #[test]
    fn unknown_variable_is_rejected_even_in_an_untaken_branch() {
        let extra = r#"        refund: "{% if not order_id %}Hi {{ custmer_name }}{% endif %}""#;
        let err = build(&config(extra)).err().expect("rejected");
        assert!(
            matches!(&err, ReplyConfigError::UnknownVariable { variable, .. } if variable == "custmer_name"),
            "{err}"
        );
    }

    #[test]
    fn unguarded_optional_slot_is_rejected() {
        let extra = r#"        refund: "Your refund for order {{ order_id }} is on its way.""#;
        let err = build(&config(extra)).err().expect("rejected");
        assert!(matches!(err, ReplyConfigError::Render { .. }), "{err}");
    }

    #[test]
    fn syntax_error_is_rejected() {
        let extra = r#"        refund: "{% if order_id %}unterminated""#;
        let err = build(&config(extra)).err().expect("rejected");
        assert!(matches!(err, ReplyConfigError::Template { .. }), "{err}");
    }

    #[test]
    fn template_printing_literal_placeholder_is_rejected() {
        let extra = r#"        refund: "Use {{ '{{' }} carefully""#;
        let err = build(&config(extra)).err().expect("rejected");
        assert!(
            matches!(err, ReplyConfigError::PlaceholderLeak { .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_required_part_is_rejected() {
        let yaml = config("").replace("      private_invite: \"Please DM us.\"\n", "");
        let err = build(&yaml).err().expect("rejected");
        assert!(
            matches!(&err, ReplyConfigError::MissingRequired { channel: "social", part, .. } if part == "private_invite"),
            "{err}"
        );
    }

    #[test]
    fn channel_template_overrides_the_language_default() {
        let yaml = config("    chat:\n      greeting: \"Hey!\"");
        let store = build(&yaml).expect("valid");
        let at = |kind| Lookup {
            tenant: None,
            language: "en",
            kind,
        };
        let chat = store
            .render(&at(ChannelKind::Chat), Part::Greeting, &slots())
            .unwrap();
        assert_eq!(chat.text, "Hey!");
        let email = store
            .render(&at(ChannelKind::Email), Part::Greeting, &slots())
            .unwrap();
        assert_eq!(email.text, "Hello,");
        assert!(!email.from_tenant);
    }

    #[test]
    fn tenant_template_overrides_the_shared_one_for_that_tenant_only() {
        let yaml = format!(
            "{}tenants:\n  acme:\n    templates:\n      en:\n        email:\n          greeting: \"Dear valued Acme customer,\"\n",
            config("")
        );
        let store = build(&yaml).expect("valid");
        let at = |tenant| Lookup {
            tenant,
            language: "en",
            kind: ChannelKind::Email,
        };
        let acme = store
            .render(&at(Some("acme")), Part::Greeting, &slots())
            .unwrap();
        assert_eq!(acme.text, "Dear valued Acme customer,");
        assert!(acme.from_tenant);
        let other = store
            .render(&at(Some("globex")), Part::Greeting, &slots())
            .unwrap();
        assert_eq!(other.text, "Hello,");
        // The tenant inherits every part it does not override.
        let sign_off = store
            .render(&at(Some("acme")), Part::SignOff, &slots())
            .unwrap();
        assert_eq!(sign_off.text, "Regards,");
    }

    #[test]
    fn rendered_parts_are_single_lines() {
        let yaml = config("    voice:\n      greeting: |\n        Hello\n        there.\n");
        let store = build(&yaml).expect("valid");
        let at = Lookup {
            tenant: None,
            language: "en",
            kind: ChannelKind::Voice,
        };
        assert_eq!(
            store.render(&at, Part::Greeting, &slots()).unwrap().text,
            "Hello there."
        );
    }
}
