//! A Label Studio project's labelling interface, as far as aelabel needs it: the `<Choices>`
//! tag that classifies an `<Image>`, and how its choices map onto the model's classes.

/// The parts of a label config (`<View>…</View>` XML) a classifier answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelConfig {
    /// The `<Choices name>`: a result's `from_name`.
    pub from_name: String,
    /// The `<Image name>` it classifies: a result's `to_name`.
    pub to_name: String,
    /// The task data key holding the image URL (the `<Image value="$key">`).
    pub data_key: String,
    /// Each `<Choice>`: the class it stands for (`value`) and what results carry (`alias`,
    /// else `value`).
    pub choices: Vec<Choice>,
}

/// One `<Choice>` of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The `value` attribute: what people see, matched against the model's class names.
    pub value: String,
    /// What a result stores for it: the `alias` attribute when set, else the value.
    pub result: String,
}

/// Why a label config cannot be used, worded for the person who wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelConfigError {
    /// Not well-formed XML.
    #[error("label_config is not well-formed XML ({0}); send the project's labelling config as Label Studio stores it")]
    Xml(String),
    /// No `<Choices>` on an `<Image>`.
    #[error("label_config has no <Choices> tag whose toName is an <Image> tag; aelabel classifies images: use e.g. <Image name=\"image\" value=\"$image\"/><Choices name=\"label\" toName=\"image\">…</Choices>")]
    NoImageChoices,
    /// The `<Image>` does not read its URL from the task data.
    #[error(
        "label_config: <Image name=\"{0}\"> has value `{1}`, not a task data key like `$image`"
    )]
    ImageValue(String, String),
    /// Some model classes have no choice.
    #[error("label_config: the <Choices name=\"{from_name}\"> choices do not include the model's classes {missing}; add a <Choice value=\"…\"/> for each (the model knows: {classes})")]
    MissingClasses {
        /// The `<Choices>` name.
        from_name: String,
        /// The classes without a choice, comma-separated.
        missing: String,
        /// Every class of the model, comma-separated.
        classes: String,
    },
}

impl LabelConfig {
    /// Finds the first `<Choices>` whose `toName` names an `<Image>` in `xml`.
    pub fn parse(xml: &str) -> Result<Self, LabelConfigError> {
        let doc =
            roxmltree::Document::parse(xml).map_err(|e| LabelConfigError::Xml(e.to_string()))?;
        let images: Vec<(String, String)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("Image"))
            .filter_map(|n| {
                Some((
                    n.attribute("name")?.to_string(),
                    n.attribute("value")?.to_string(),
                ))
            })
            .collect();
        for choices in doc.descendants().filter(|n| n.has_tag_name("Choices")) {
            let (Some(from_name), Some(to_names)) =
                (choices.attribute("name"), choices.attribute("toName"))
            else {
                continue;
            };
            // toName may list several tags, comma-separated.
            let Some((to_name, value)) = to_names
                .split(',')
                .map(str::trim)
                .find_map(|to| images.iter().find(|(name, _)| name == to))
            else {
                continue;
            };
            let data_key = value
                .strip_prefix('$')
                .filter(|k| !k.is_empty())
                .ok_or_else(|| LabelConfigError::ImageValue(to_name.clone(), value.clone()))?;
            let choices = choices
                .descendants()
                .filter(|n| n.has_tag_name("Choice"))
                .filter_map(|n| {
                    let value = n.attribute("value")?.to_string();
                    let result = n.attribute("alias").unwrap_or(&value).to_string();
                    Some(Choice { value, result })
                })
                .collect();
            return Ok(Self {
                from_name: from_name.to_string(),
                to_name: to_name.clone(),
                data_key: data_key.to_string(),
                choices,
            });
        }
        Err(LabelConfigError::NoImageChoices)
    }

    /// The choice result for each of `classes` (in class order), or which classes have no
    /// choice. Choices beyond the model's classes are allowed: people may use them, but
    /// such reviews cannot train this model.
    pub fn results_for(&self, classes: &[String]) -> Result<Vec<String>, LabelConfigError> {
        let mut missing = Vec::new();
        let results: Vec<String> = classes
            .iter()
            .filter_map(|class| {
                let found = self.choices.iter().find(|c| &c.value == class);
                if found.is_none() {
                    missing.push(class.as_str());
                }
                found.map(|c| c.result.clone())
            })
            .collect();
        if missing.is_empty() {
            Ok(results)
        } else {
            Err(LabelConfigError::MissingClasses {
                from_name: self.from_name.clone(),
                missing: missing.join(", "),
                classes: classes.join(", "),
            })
        }
    }

    /// The class a person's choice (as a result stores it) stands for: the choice's value.
    pub fn class_of(&self, result: &str) -> Option<&str> {
        self.choices
            .iter()
            .find(|c| c.result == result)
            .map(|c| c.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"<View>
  <Image name="img" value="$picture" zoom="true"/>
  <Choices name="garment" toName="img" choice="single">
    <Choice value="Shirt"/>
    <Choice value="Bag" alias="bag"/>
    <Choice value="Other"/>
  </Choices>
</View>"#;

    #[test]
    fn finds_the_choices_on_an_image_and_its_data_key() {
        let config = LabelConfig::parse(CONFIG).unwrap();
        assert_eq!(config.from_name, "garment");
        assert_eq!(config.to_name, "img");
        assert_eq!(config.data_key, "picture");
        let classes = ["Bag".to_string(), "Shirt".to_string()];
        assert_eq!(config.results_for(&classes).unwrap(), ["bag", "Shirt"]);
        assert_eq!(config.class_of("bag"), Some("Bag"));
        assert_eq!(config.class_of("Other"), Some("Other"));
        assert_eq!(config.class_of("Bag"), None, "results carry the alias");
    }

    #[test]
    fn names_the_classes_without_a_choice() {
        let config = LabelConfig::parse(CONFIG).unwrap();
        let classes = [
            "Shirt".to_string(),
            "Sandal".to_string(),
            "Coat".to_string(),
        ];
        let err = config.results_for(&classes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label_config: the <Choices name=\"garment\"> choices do not include the model's classes Sandal, Coat; add a <Choice value=\"…\"/> for each (the model knows: Shirt, Sandal, Coat)"
        );
    }

    #[test]
    fn refuses_configs_that_do_not_classify_an_image() {
        let text = r#"<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="A"/></Choices></View>"#;
        assert_eq!(
            LabelConfig::parse(text),
            Err(LabelConfigError::NoImageChoices)
        );
        assert!(matches!(
            LabelConfig::parse("<View>"),
            Err(LabelConfigError::Xml(_))
        ));
        let fixed = r#"<View><Image name="i" value="http://x/a.png"/><Choices name="c" toName="i"/></View>"#;
        assert!(matches!(
            LabelConfig::parse(fixed),
            Err(LabelConfigError::ImageValue(..))
        ));
    }
}
