//! Channel formatting: how rendered parts become a chat line (short), an email (subject,
//! greeting, body, sign-off), SMS segments (GSM-7/UCS-2 limits), a TTS-friendly voice script
//! (no URLs, emoji or markup) or a public-safe social reply (no personal data, an invitation
//! to a private channel).

use std::collections::BTreeMap;

use super::config::ChannelsConfig;
use super::sms;
use super::text::{is_emoji, join_sentences, split_sentences, squash_whitespace, truncate_chars};

/// The formatting families; any other channel name is `Other` unless aliased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ChannelKind {
    Chat,
    Email,
    Sms,
    Voice,
    Social,
    Other,
}

impl ChannelKind {
    pub(crate) const ALL: [ChannelKind; 6] = [
        ChannelKind::Chat,
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Voice,
        ChannelKind::Social,
        ChannelKind::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Chat => "chat",
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Voice => "voice",
            ChannelKind::Social => "social",
            ChannelKind::Other => "other",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The rendered pieces of one reply, each a single line (possibly empty).
#[derive(Debug, Default, Clone)]
pub(crate) struct RenderedParts {
    pub greeting: String,
    pub subject: String,
    pub opening: String,
    pub body: String,
    pub closing: String,
    pub sign_off: String,
    pub signature: String,
    pub private_invite: String,
}

/// What a channel sends: `body` for most, `segments` for SMS, `subject` for email.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Formatted {
    pub subject: Option<String>,
    pub body: Option<String>,
    pub segments: Option<Vec<String>>,
}

impl Formatted {
    /// Everything the customer would see, for the final safety checks.
    pub(crate) fn texts(&self) -> impl Iterator<Item = &str> {
        self.subject
            .iter()
            .chain(&self.body)
            .chain(self.segments.iter().flatten())
            .map(String::as_str)
    }
}

/// How a piece behaves when a reply is over its channel's length limit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fit {
    Keep,
    /// Removed first (the greeting).
    Drop,
    /// Then cut sentence by sentence from the end (the intent body).
    Shrink,
}

pub(crate) struct Channels {
    aliases: BTreeMap<String, ChannelKind>,
    limits: ChannelsConfig,
}

impl Channels {
    /// Expects a validated config (alias targets are known kinds).
    pub(crate) fn new(config: &ChannelsConfig) -> Channels {
        let aliases = config
            .aliases
            .iter()
            .filter_map(|(name, kind)| Some((name.to_lowercase(), ChannelKind::parse(kind)?)))
            .collect();
        Channels {
            aliases,
            limits: ChannelsConfig {
                aliases: BTreeMap::new(),
                ..*config
            },
        }
    }

    /// `channel` is already trimmed and lowercased.
    pub(crate) fn kind_of(&self, channel: &str) -> ChannelKind {
        match ChannelKind::parse(channel) {
            Some(kind) => kind,
            None => self
                .aliases
                .get(channel)
                .copied()
                .unwrap_or(ChannelKind::Other),
        }
    }

    /// `sensitive` lists message fragments a public reply must not repeat.
    pub(crate) fn format(
        &self,
        kind: ChannelKind,
        p: &RenderedParts,
        sensitive: &[String],
    ) -> Formatted {
        let limits = &self.limits;
        let text = |body: String| Formatted {
            subject: None,
            body: Some(body),
            segments: None,
        };
        match kind {
            ChannelKind::Chat => text(fit(spoken_order(p), STANDARD_FIT, limits.chat.max_chars)),
            ChannelKind::Other => text(fit(spoken_order(p), STANDARD_FIT, limits.other.max_chars)),
            ChannelKind::Email => Formatted {
                subject: Some(p.subject.clone()).filter(|s| !s.is_empty()),
                body: Some(email_body(p)),
                segments: None,
            },
            ChannelKind::Sms => Formatted {
                subject: None,
                body: None,
                segments: Some(sms::segment(
                    &join_sentences(spoken_order(p)),
                    limits.sms.max_segments,
                )),
            },
            ChannelKind::Voice => {
                let clean = spoken_order(p).map(voice_safe);
                let texts = clean.each_ref().map(String::as_str);
                text(fit(texts, STANDARD_FIT, limits.voice.max_chars))
            }
            ChannelKind::Social => {
                let public = [&p.opening, &p.body, &p.closing, &p.private_invite];
                let clean = public.map(|s| scrub(s, sensitive));
                let texts = clean.each_ref().map(String::as_str);
                text(fit(texts, SOCIAL_FIT, limits.social.max_chars))
            }
        }
    }
}

/// Greeting, opening, body, closing: the order of every single-text channel but social.
fn spoken_order(p: &RenderedParts) -> [&str; 4] {
    [&p.greeting, &p.opening, &p.body, &p.closing].map(String::as_str)
}

/// For [`spoken_order`]: the greeting goes first, the body shrinks.
const STANDARD_FIT: [Fit; 4] = [Fit::Drop, Fit::Keep, Fit::Shrink, Fit::Keep];
/// Opening, body, closing, private invitation: the invitation always stays.
const SOCIAL_FIT: [Fit; 4] = [Fit::Keep, Fit::Shrink, Fit::Drop, Fit::Keep];

/// Greeting; opening and body as one paragraph; closing; sign-off and signature.
fn email_body(p: &RenderedParts) -> String {
    let main = join_sentences([p.opening.as_str(), p.body.as_str()]);
    let sign = [p.sign_off.as_str(), p.signature.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    [p.greeting.as_str(), &main, &p.closing, &sign]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Joins the pieces and, when over `max` characters, drops, then shrinks, then truncates.
fn fit(pieces: [&str; 4], how: [Fit; 4], max: usize) -> String {
    let mut texts: Vec<String> = pieces.map(String::from).to_vec();
    let joined = |texts: &[String]| join_sentences(texts.iter().map(String::as_str));
    let fits = |s: &str| s.chars().count() <= max;

    let mut out = joined(&texts);
    if fits(&out) {
        return out;
    }
    for (text, how) in texts.iter_mut().zip(how) {
        if how == Fit::Drop {
            text.clear();
        }
    }
    out = joined(&texts);
    for i in 0..texts.len() {
        if how[i] != Fit::Shrink {
            continue;
        }
        let mut sentences: Vec<String> = split_sentences(&texts[i])
            .into_iter()
            .map(String::from)
            .collect();
        while !fits(&out) && sentences.pop().is_some() {
            texts[i] = join_sentences(sentences.iter().map(String::as_str));
            out = joined(&texts);
        }
    }
    truncate_chars(&out, max)
}

/// Text a TTS engine can read: no URLs, emoji or markup characters.
pub(crate) fn voice_safe(text: &str) -> String {
    let no_urls = remove_urls(text);
    let no_tags = remove_tags(&no_urls);
    let kept: String = no_tags
        .chars()
        .map(|c| {
            if is_emoji(c)
                || c.is_control()
                || matches!(
                    c,
                    '*' | '_'
                        | '#'
                        | '`'
                        | '~'
                        | '<'
                        | '>'
                        | '['
                        | ']'
                        | '|'
                        | '{'
                        | '}'
                        | '\\'
                        | '^'
                )
            {
                ' '
            } else {
                c
            }
        })
        .collect();
    // A link's text may be left with empty brackets: "[here](url)" → "here ( )".
    let squashed = squash_whitespace(&kept);
    let squashed = squashed
        .replace("( )", " ")
        .replace("()", " ")
        .replace("（）", " ");
    tidy_punctuation(&squash_whitespace(&squashed))
}

/// Removes `http://`, `https://` and `www.` links up to the next space, CJK character or
/// closing bracket/quote.
fn remove_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url_start(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| {
                c.is_whitespace()
                    || super::text::is_cjk(c)
                    || matches!(c, ')' | ']' | '>' | '"' | '\'')
            })
            .unwrap_or(url.len());
        // Sentence punctuation right after a link belongs to the sentence.
        let end = url[..end]
            .trim_end_matches(['.', ',', '!', '?', ';', ':'])
            .len();
        out.push(' ');
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

fn find_url_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    ["http://", "https://", "www."]
        .iter()
        .filter_map(|scheme| lower.find(scheme))
        .min()
}

/// Drops `<...>` spans that look like markup tags (closed within 64 bytes, no spaces first).
fn remove_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('>') {
            Some(close) if close <= 64 && !after.starts_with(char::is_whitespace) => {
                out.push(' ');
                rest = &after[close + 1..];
            }
            _ => {
                out.push(' ');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// "word ." → "word." after characters were removed.
fn tidy_punctuation(text: &str) -> String {
    let mut out = text.to_string();
    for p in [" .", " ,", " !", " ?", " ;", " :", " 。", " ，"] {
        out = out.replace(p, p.trim_start());
    }
    out
}

/// Removes every sensitive fragment (longest first, as given) from a public reply.
pub(crate) fn scrub(text: &str, sensitive: &[String]) -> String {
    let mut out = text.to_string();
    for fragment in sensitive.iter().filter(|f| !f.is_empty()) {
        if out.contains(fragment.as_str()) {
            out = out.replace(fragment.as_str(), " ");
        }
    }
    tidy_punctuation(&squash_whitespace(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> RenderedParts {
        RenderedParts {
            greeting: "Hi Anna,".into(),
            subject: "Re: My refund".into(),
            opening: "I'm sorry about this.".into(),
            body: "I've started the refund. It takes 5 to 7 days. You'll get an email.".into(),
            closing: "Want a senior colleague?".into(),
            sign_off: "Kind regards,".into(),
            signature: "The Support Team".into(),
            private_invite: "Please send us a direct message.".into(),
        }
    }

    fn channels() -> Channels {
        Channels::new(&ChannelsConfig::default())
    }

    #[test]
    fn known_names_and_aliases_resolve_to_kinds() {
        let mut config = ChannelsConfig::default();
        config.aliases.insert("WhatsApp".into(), "chat".into());
        let channels = Channels::new(&config);
        assert_eq!(channels.kind_of("email"), ChannelKind::Email);
        assert_eq!(channels.kind_of("whatsapp"), ChannelKind::Chat);
        assert_eq!(channels.kind_of("fax"), ChannelKind::Other);
    }

    #[test]
    fn email_has_subject_greeting_body_and_sign_off_in_paragraphs() {
        let email = channels().format(ChannelKind::Email, &parts(), &[]);
        assert_eq!(email.subject.as_deref(), Some("Re: My refund"));
        assert_eq!(
            email.body.as_deref(),
            Some(
                "Hi Anna,\n\nI'm sorry about this. I've started the refund. It takes 5 to 7 days. \
                 You'll get an email.\n\nWant a senior colleague?\n\nKind regards,\nThe Support Team"
            )
        );
        assert_eq!(email.segments, None);
    }

    #[test]
    fn chat_over_the_limit_drops_greeting_then_body_sentences_but_keeps_the_closing() {
        let mut config = ChannelsConfig::default();
        config.chat.max_chars = 80;
        let chat = Channels::new(&config).format(ChannelKind::Chat, &parts(), &[]);
        let body = chat.body.unwrap();
        assert!(body.chars().count() <= 80, "{body}");
        assert_eq!(
            body,
            "I'm sorry about this. I've started the refund. Want a senior colleague?"
        );
    }

    #[test]
    fn chat_without_room_for_even_the_kept_pieces_is_truncated() {
        let mut config = ChannelsConfig::default();
        config.chat.max_chars = 40;
        let body = Channels::new(&config)
            .format(ChannelKind::Chat, &parts(), &[])
            .body
            .unwrap();
        assert!(body.chars().count() <= 40, "{body}");
        assert!(body.ends_with('…'));
    }

    #[test]
    fn sms_is_sent_as_segments_without_a_body() {
        let sms = channels().format(ChannelKind::Sms, &parts(), &[]);
        assert_eq!(sms.body, None);
        let segments = sms.segments.unwrap();
        assert!(!segments.is_empty());
        assert!(segments[0].starts_with("Hi Anna,"));
    }

    #[test]
    fn voice_script_has_no_urls_emoji_or_markup() {
        let spoken = voice_safe(
            "**Great** news 😀! See https://example.com/track?id=1 or www.Example.com. \
             <b>Bold</b> [here](http://x.y) 请访问https://x.cn查看",
        );
        assert_eq!(spoken, "Great news! See or. Bold here 请访问 查看");
    }

    #[test]
    fn social_reply_scrubs_message_fragments_and_invites_to_a_private_channel() {
        let mut p = parts();
        p.body = "Order A10023 for jo@example.com is late.".into();
        let social = channels().format(
            ChannelKind::Social,
            &p,
            &["jo@example.com".to_string(), "A10023".to_string()],
        );
        let body = social.body.unwrap();
        assert!(
            !body.contains("A10023") && !body.contains("jo@example.com"),
            "{body}"
        );
        assert!(body.ends_with("Please send us a direct message."), "{body}");
    }

    #[test]
    fn cjk_parts_are_joined_without_spaces() {
        let p = RenderedParts {
            greeting: "您好！".into(),
            opening: "非常抱歉。".into(),
            body: "已为您发起退款。".into(),
            closing: "需要转接专员吗？".into(),
            ..RenderedParts::default()
        };
        let chat = channels().format(ChannelKind::Chat, &p, &[]);
        assert_eq!(
            chat.body.as_deref(),
            Some("您好！非常抱歉。已为您发起退款。需要转接专员吗？")
        );
    }
}
